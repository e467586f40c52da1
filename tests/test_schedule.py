import pytest

from ctcasr.config import SchedulerConfig
from ctcasr.errors import CtcasrError
from ctcasr.train.schedule import lr_at, noam, noam_factor, noam_paper, plateau_scale


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


def test_cosine_values():
    cfg = SchedulerConfig(name="cosine", warmup_steps=10, peak_lr=1e-3, min_lr=1e-5)
    assert lr_at(5, cfg, total_steps=110) == pytest.approx(5e-4)
    assert lr_at(10, cfg, total_steps=110) == pytest.approx(1e-3)
    assert lr_at(60, cfg, total_steps=110) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert lr_at(110, cfg, total_steps=110) == pytest.approx(1e-5)
    assert lr_at(500, cfg, total_steps=110) == pytest.approx(1e-5)
    # scheduler.total_steps wins over the run's length
    cfg2 = SchedulerConfig(name="cosine", warmup_steps=0, peak_lr=1.0, total_steps=100)
    assert lr_at(50, cfg2, total_steps=7) == pytest.approx(0.5)
    with pytest.raises(CtcasrError, match="total_steps"):
        lr_at(1, SchedulerConfig(name="cosine"))


def test_step_and_multistep_values():
    multi = SchedulerConfig(name="step", warmup_steps=0, peak_lr=1.0, milestones=[10, 20],
                            gamma=0.5)
    assert [lr_at(s, multi) for s in (1, 9, 10, 19, 20, 1000)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    every = SchedulerConfig(name="step", warmup_steps=4, peak_lr=1.0, step_size=10, gamma=0.1)
    assert lr_at(2, every) == pytest.approx(0.5)  # warming up
    assert [lr_at(s, every) for s in (9, 10, 25)] == pytest.approx([1.0, 0.1, 0.01])


def test_plateau_reduces_after_patience_epochs_without_improvement():
    cfg = SchedulerConfig(name="plateau", warmup_steps=0, peak_lr=1.0, factor=0.5, patience=1)
    assert plateau_scale([], cfg) == 1.0
    assert plateau_scale([3.0, 2.0, 1.0], cfg) == 1.0  # improving
    assert plateau_scale([3.0, 2.0, 2.5], cfg) == 1.0  # one bad epoch = patience
    assert plateau_scale([3.0, 2.0, 2.5, 2.0], cfg) == 0.5  # two: reduce, count restarts
    assert plateau_scale([3.0, 2.0, 2.5, 2.0, 2.1], cfg) == 0.5
    assert plateau_scale([3.0, 2.0, 2.5, 2.0, 2.1, 2.2], cfg) == 0.25
    assert lr_at(7, cfg, valid_losses=[3.0, 2.0, 2.5, 2.0]) == 0.5
    assert lr_at(7, SchedulerConfig(name="constant", warmup_steps=0, peak_lr=0.3)) == 0.3


def test_plateau_matches_torch_reduce_on_plateau():
    import torch

    cfg = SchedulerConfig(name="plateau", factor=0.5, patience=2, threshold=0.01)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2,
                                                       threshold=0.01)
    losses = [5, 4, 4.1, 3.99, 4.2, 4.0, 3.0, 3.1, 3.2, 3.3, 3.0, 2.99, 2.98, 2.97, 2.5]
    for n in range(1, len(losses) + 1):
        sched.step(losses[n - 1])
        assert plateau_scale(losses[:n], cfg) == pytest.approx(opt.param_groups[0]["lr"]), n
