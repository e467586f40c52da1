import pytest

from ctcasr.config import SchedulerConfig
from ctcasr.errors import CtcasrError
from ctcasr.train.schedule import lr_at, noam, noam_factor, noam_paper


def test_noam_values():
    cfg = SchedulerConfig(name="noam", warmup_steps=100, peak_lr=1e-3)
    assert lr_at(1, cfg) == pytest.approx(1e-5)
    assert lr_at(50, cfg) == pytest.approx(5e-4)
    assert lr_at(100, cfg) == pytest.approx(1e-3)
    assert lr_at(400, cfg) == pytest.approx(5e-4)  # 1e-3 * sqrt(100 / 400)
    assert lr_at(10000, cfg) == pytest.approx(1e-4)
    assert max(lr_at(s, cfg) for s in range(1, 1000)) == pytest.approx(1e-3)


def test_noam_is_the_paper_formula():
    d_model, warmup = 512, 4000
    factor = noam_factor(7e-4, d_model, warmup)
    for step in (1, 10, 3999, 4000, 4001, 10**5):
        assert noam(step, warmup, 7e-4) == pytest.approx(noam_paper(step, d_model, warmup, factor))
    # the paper's own numbers: factor 1, d_model 512, warmup 4000 peaks at ~7.0e-4
    assert noam_paper(4000, 512, 4000) == pytest.approx(512**-0.5 * 4000**-0.5)


def test_unknown_schedule():
    with pytest.raises(CtcasrError, match="unknown 'cosinus'"):
        lr_at(1, SchedulerConfig(name="cosinus"))
