import pytest

from ctcasr.config import Config, RNNConfig, load_config
from ctcasr.errors import CtcasrError


def test_defaults_overrides_and_round_trip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "model:\n  encoder: gru\n  encoder_conf: {hidden_size: 32}\nscheduler: {peak_lr: 1}\n"
    )
    cfg = load_config(p, ["train.epochs=3", "optim.betas=[0.8, 0.9]", "scheduler.peak_lr=2e-3"])
    assert cfg.model.encoder == "gru"
    assert cfg.model.encoder_conf == RNNConfig(hidden_size=32)
    assert cfg.train.epochs == 3 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.scheduler.peak_lr == 0.002 and isinstance(cfg.scheduler.peak_lr, float)
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("text, message", [
    ("train: {epoch: 3}", "unknown config key train.epoch"),
    ("model: {encoder_conf: {hidden: 3}}", "unknown config key model.encoder_conf.hidden"),
    ("bogus: 1", "unknown config key bogus"),
    ("train: {epochs: three}", "train.epochs: expected int"),
    ("model: {encoder: transformerx}", "model.encoder: unknown 'transformerx'"),
    ("train: [1, 2]", "train: expected a mapping"),
    ("data: {features: {num_mel_bins: [", "not valid YAML"),
])
def test_bad_configs_name_the_key(tmp_path, text, message):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(CtcasrError) as e:
        load_config(p)
    assert str(p) in str(e.value) and message in str(e.value)


def test_bad_override():
    with pytest.raises(CtcasrError, match="expected KEY=VALUE"):
        load_config(None, ["train.epochs"])
    with pytest.raises(CtcasrError, match="unknown config key train.nope"):
        load_config(None, ["train.nope=1"])
