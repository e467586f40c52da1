import json
import math

import pytest
import torch

from ctcasr.checkpoint import load_checkpoint
from ctcasr.config import (
    FrontendConfig,
    ModelConfig,
    RNNConfig,
    SchedulerConfig,
    TrainConfig,
    load_config,
)
from ctcasr.data.dataset import ASRDataset
from ctcasr.data.manifest import read_manifest
from ctcasr.errors import CtcasrError
from ctcasr.models import build_model
from ctcasr.models.ctc import ctc_loss, min_ctc_frames
from ctcasr.tokenizer import CharTokenizer
from ctcasr.train.trainer import train, train_step


def test_min_ctc_frames_counts_repeats():
    tokens = torch.tensor([[1, 1, 2, 2, 2], [3, 1, 3, 0, 0], [4, 4, 0, 0, 0]])
    lens = torch.tensor([5, 3, 1])
    assert min_ctc_frames(tokens, lens).tolist() == [8, 3, 1]


def test_ctc_loss_is_zero_not_inf_for_infeasible_utterances():
    lp = torch.randn(2, 3, 5).log_softmax(-1)
    loss = ctc_loss(lp, torch.tensor([3, 3]), torch.tensor([[1, 1, 1], [1, 2, 0]]),
                    torch.tensor([3, 2]))
    assert loss[0].item() == 0.0 and math.isfinite(loss[1].item()) and loss[1].item() > 0


def test_clipping_bounds_the_update(corpus):
    """With SGD at lr 1 the update is the clipped gradient: its norm is max_norm."""
    utts = read_manifest(corpus)
    tok = CharTokenizer.train(u.text for u in utts)
    cfg = load_config(None, ["train.max_norm=0.01", "scheduler.warmup_steps=1",
                             "scheduler.peak_lr=1.0", "data.features.sample_rate=8000",
                             "data.features.num_mel_bins=23"])
    ds = ASRDataset(utts[:4], cfg.data.features, tok)
    batch = ds.collate([ds[i] for i in range(4)])
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(frontend=FrontendConfig(4, 4, 8), encoder_conf=RNNConfig(8, 1, 0.0)),
        23, tok.vocab_size, torch.zeros(23), torch.ones(23) * 5,
    )
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    res = train_step(model, opt, [batch], len(batch), cfg.train.max_norm)
    loss, grad_norm = res.loss, res.grad_norm
    pairs = zip(model.parameters(), before, strict=True)
    delta = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in pairs))
    assert grad_norm > 0.01 and loss > 0
    assert delta.item() == pytest.approx(0.01, rel=1e-3)


def run_train(config, manifest, exp, overrides=(), resume=False):
    cfg = load_config(config, list(overrides))
    return train(cfg, manifest, manifest, exp, resume=resume)


def test_resume_is_bitwise_identical(tiny_config, corpus, tmp_path):
    full = run_train(tiny_config, corpus, tmp_path / "full")
    n_steps = full.step
    assert full.epoch == 3 and n_steps > 6
    # Stop mid-way through epoch 2, then resume to the end.
    stop_at = n_steps // 3 + 2
    part = run_train(tiny_config, corpus, tmp_path / "part", [f"train.max_steps={stop_at}"])
    assert part.step == stop_at and part.epoch == 1 and part.batch_in_epoch > 0
    resumed = run_train(tiny_config, corpus, tmp_path / "part", resume=True)
    assert resumed.step == n_steps
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "part" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["train_state"]["state"]["history"] == b["train_state"]["state"]["history"]
    # and the run's files are there
    for name in ("model.pt", "best.pt", "config.yaml", "train_log.jsonl", "train.log"):
        assert (tmp_path / "part" / name).exists(), name
    logs = [json.loads(x) for x in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "grad_norm", "step"} <= set(logs[0])
    assert sum("valid_wer" in r for r in logs) == 3


def test_refuses_to_overwrite_and_checks_architecture_on_resume(tiny_config, corpus, tmp_path):
    run_train(tiny_config, corpus, tmp_path / "e", ["train.epochs=1"])
    with pytest.raises(CtcasrError, match="already holds a run"):
        run_train(tiny_config, corpus, tmp_path / "e")
    with pytest.raises(CtcasrError) as e:
        run_train(tiny_config, corpus, tmp_path / "e",
                  ["model.encoder_conf.hidden_size=8", "model.frontend.dim=20"], resume=True)
    assert "model.encoder_conf.hidden_size" in str(e.value)
    assert "model.frontend.dim" in str(e.value)
    with pytest.raises(CtcasrError, match="nothing to resume"):
        run_train(tiny_config, corpus, tmp_path / "new", resume=True)


def test_defaults_are_valid():
    assert TrainConfig().max_norm > 0 and SchedulerConfig().name == "noam"
