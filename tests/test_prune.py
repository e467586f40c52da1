"""Structured pruning (``ctcasr prune``): whole units out, a smaller dense model that loads,
decodes, streams, exports and fine-tunes like any other."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from test_cli import run_cli
from test_transcribe import ENCODER_CONF, SR, TINY, make_checkpoint, utterance

import ctcasr
from ctcasr.checkpoint import load_checkpoint
from ctcasr.config import Config, load_config
from ctcasr.errors import CtcasrError
from ctcasr.models import build_model
from ctcasr.models.prune import GATES, prune
from ctcasr.train.trainer import train

VOCAB = 6


def model_of(encoder: str, seed: int = 0, extra: dict | None = None, **conf):
    raw = json.loads(json.dumps(TINY))
    raw["model"].update(encoder=encoder, encoder_conf={**ENCODER_CONF[encoder], **conf},
                        **(extra or {}))
    cfg = Config.from_dict(raw)
    torch.manual_seed(seed)
    model = build_model(cfg.model, 23, VOCAB, torch.zeros(23), torch.ones(23)).eval()
    with torch.no_grad():  # biases away from PyTorch's defaults, so that they count
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cfg, model


def outputs(cfg, state: dict, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    model = build_model(cfg.model, 23, VOCAB, torch.zeros(23), torch.ones(23)).eval()
    model.load_state_dict(state)
    with torch.no_grad():
        lp, out_lens = model(x, lens)
    return lp.masked_fill((torch.arange(lp.shape[1]) >= out_lens[:, None])[..., None], 0)


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 60, 23, generator=g), torch.tensor([60, 41, 25])


CASES = {
    "bilstm": ("lstm", {}, {}),
    "bigru": ("gru", {}, {}),
    "lstm-uni": ("lstm", {}, {"bidirectional": False}),
    "lstm-packed": ("lstm", {}, {"impl": "packed"}),
    "bilstm-sc-ctc": ("lstm", {"inter_ctc_layers": [1], "inter_ctc_condition": True},
                      {"num_layers": 3}),
    "conformer": ("conformer", {}, {}),
    "transformer": ("transformer", {}, {}),
    "ebranchformer": ("ebranchformer", {}, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sparsity_zero_is_the_identity(case):
    encoder, extra, conf = CASES[case]
    cfg, model = model_of(encoder, extra=extra, **conf)
    state = model.state_dict()
    pruned = prune(state, cfg.model, 0.0)
    assert set(pruned.state) == set(state)
    assert all(torch.equal(pruned.state[k], v) for k, v in state.items())


def silence_units(cfg, model, seed: int) -> dict[str, torch.Tensor]:
    """Make some units of every group carry nothing (what reads them: zero) and weigh least
    (what feeds them: tiny); returns, per group (as Pruned.kept names them), the others."""
    conf, state = cfg.model.encoder_conf, model.state_dict()
    g = torch.Generator().manual_seed(seed)
    kept = {}
    with torch.no_grad():
        if cfg.model.encoder in GATES:
            h, gates = conf.hidden_size, GATES[cfg.model.encoder]
            dirs = 2 if conf.bidirectional else 1
            shared = {n - 1 for n in cfg.model.inter_ctc_layers} | {conf.num_layers - 1}
            drop_shared = [torch.randperm(h, generator=g)[: h // 4] for _ in range(dirs)]
            for i in range(conf.num_layers):
                for d in range(dirs):
                    drop = drop_shared[d] if i in shared \
                        else torch.randperm(h, generator=g)[: h // 4]
                    kept[f"layer {i + 1} {('forward', 'backward')[d]}"] = torch.tensor(
                        sorted(set(range(h)) - set(drop.tolist())))
                    pre = f"encoder.{('forward', 'backward')[d]}_layers.{i}."
                    rows = torch.cat([k * h + drop for k in range(gates)])
                    for w in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                        state[pre + w][rows] *= 1e-3
                    state[pre + "weight_hh_l0"][:, drop] = 0
                    readers = [f"encoder.{n}_layers.{i + 1}.weight_ih_l0"
                               for n in ("forward", "backward")[:dirs]] \
                        if i + 1 < conf.num_layers else ["head.weight"]
                    for r in readers:
                        state[r][:, d * h + drop] = 0
        else:
            for name in [n for n in state if n.endswith(".fn.net.0.weight")]:
                pre = name.removesuffix("0.weight")
                drop = torch.randperm(conf.ffn_dim, generator=g)[: conf.ffn_dim // 4]
                state[pre + "0.weight"][drop] *= 1e-3
                state[pre + "0.bias"][drop] *= 1e-3
                state[pre + "3.weight"][:, drop] = 0
                kept[pre.removesuffix(".fn.net.")] = torch.tensor(
                    sorted(set(range(conf.ffn_dim)) - set(drop.tolist())))
    return kept


@pytest.mark.parametrize("case", [c for c in CASES if c != "lstm-packed"])
def test_the_units_that_weigh_least_go_and_the_outputs_stay(case):
    """A quarter of every group's units made to carry nothing and weigh least: pruning a
    quarter removes exactly those (per layer, direction, feed-forward network; the layers the
    CTC head reads, together), and the smaller model computes the same log-probs."""
    encoder, extra, conf = CASES[case]
    cfg, model = model_of(encoder, seed=3, extra=extra, **conf)
    want_kept = silence_units(cfg, model, seed=4)
    x, lens = batch()
    before = outputs(cfg, model.state_dict(), x, lens)
    pruned = prune(model.state_dict(), cfg.model, 0.25)
    half = prune(model.state_dict(), cfg.model, 0.5)  # also units that carry something
    assert set(pruned.kept) == set(want_kept)
    for group, units in want_kept.items():
        assert torch.equal(pruned.kept[group], units), group
    assert list(pruned.encoder_conf.values()) == [len(next(iter(want_kept.values())))]
    assert outputs(smaller(cfg, pruned), pruned.state, x, lens).sub(before).abs().max() < 2e-5
    assert outputs(smaller(cfg, half), half.state, x, lens).sub(before).abs().max() > 1e-3


def smaller(cfg: Config, pruned) -> Config:
    raw = cfg.to_dict()
    raw["model"]["encoder_conf"].update(pruned.encoder_conf)
    return Config.from_dict(raw)


def test_bad_sparsity_is_one_clear_error():
    cfg, model = model_of("lstm")
    for s in (1.0, -0.1, 1.5):
        with pytest.raises(CtcasrError, match=r"sparsity must be in \[0, 1\), got"):
            prune(model.state_dict(), cfg.model, s)


@pytest.fixture(scope="module")
def uni(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("prune") / "uni.pt", "lstm",
                           bidirectional=False, hidden_size=32)


def test_the_pruned_checkpoint_loads_streams_and_exports(uni, tmp_path, capsys, monkeypatch):
    out = tmp_path / "pruned.pt"
    code, text, err = run_cli(["prune", uni, "--sparsity", "0.5", "-o", out], capsys,
                              monkeypatch)
    assert code == 0, err
    before = sum(t.numel() for n, t in load_checkpoint(uni)["model"].items()
                 if not n.startswith("cmvn."))
    after = sum(t.numel() for n, t in load_checkpoint(out)["model"].items()
                if not n.startswith("cmvn."))
    assert f"{after:,} parameters ({before:,} before" in text and after < 0.6 * before
    assert f"--init {out} --set model.encoder_conf.hidden_size=16" in text
    assert load_checkpoint(out)["config"]["model"]["encoder_conf"]["hidden_size"] == 16
    asr = ctcasr.load(out)
    wave = utterance(np.random.default_rng(5), words=3, seed=50)[0]
    whole = asr.transcribe(wave, SR)
    s = asr.stream("s")
    for i in range(0, len(wave), 700):
        s.accept(wave[i : i + 700], SR)
    assert s.finish().text == whole.text
    code, _, err = run_cli(["export", out, "-o", tmp_path / "m.onnx"], capsys, monkeypatch)
    assert code == 0, err
    onnx = ctcasr.load(tmp_path / "m.onnx")
    assert onnx.transcribe(wave, SR).text == whole.text


def test_the_pruned_model_fine_tunes_with_every_weight_loaded(tiny_config, corpus, tmp_path,
                                                              capsys, monkeypatch, caplog):
    cfg = load_config(tiny_config, ["train.epochs=1", "train.tensorboard=false"])
    train(cfg, corpus, corpus, tmp_path / "source")
    out = tmp_path / "pruned.pt"
    code, text, err = run_cli(["prune", tmp_path / "source" / "model.pt", "--sparsity", "0.25",
                               "-o", out], capsys, monkeypatch)
    assert code == 0, err
    sets = re.findall(r"--set (\S+)", text)
    assert sets == ["model.encoder_conf.hidden_size=12"]
    ft = load_config(tiny_config, ["train.epochs=1", "train.tensorboard=false",
                                   f"train.init={out}", *sets])
    with caplog.at_level("INFO"):
        train(ft, corpus, corpus, tmp_path / "ft")
    assert "left out: cmvn.mean (CMVN" in caplog.text and "(shape" not in caplog.text
    assert (tmp_path / "ft" / "model.pt").exists()


def test_prune_cli_errors(uni, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["prune", uni, "--sparsity", "1", "-o", tmp_path / "x.pt"], capsys,
                           monkeypatch)
    assert code != 0 and "sparsity must be in [0, 1), got 1" in err
    assert not (tmp_path / "x.pt").exists()


def test_the_layers_the_ctc_head_reads_keep_the_same_units():
    """Intermediate CTC reads layer 1 through the same output layer as layer 3 (and
    self-conditioning adds to both): their units go together, chosen by the sum of scores."""
    encoder, extra, conf = CASES["bilstm-sc-ctc"]
    cfg, model = model_of(encoder, seed=8, extra=extra, **conf)
    pruned = prune(model.state_dict(), cfg.model, 0.5)
    for d in ("forward", "backward"):
        assert torch.equal(pruned.kept[f"layer 1 {d}"], pruned.kept[f"layer 3 {d}"])
        assert not torch.equal(pruned.kept[f"layer 1 {d}"], pruned.kept[f"layer 2 {d}"])


def test_the_recipes_prune_stage_prints_the_fine_tune_overrides(uni, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "p.pt"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", f'. "{root}/egs/common/stages.sh"; '
                        f'prune_model "{uni}" 0.5 "{out}"'],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["model.encoder_conf.hidden_size=16"]
    assert "fewer)" in r.stderr and out.is_file()
