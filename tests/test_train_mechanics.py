"""Training mechanics: accumulation, non-finite steps, early stopping, averaging, logs, plots."""

import json

import pytest
import torch
from torch import nn

from ctcasr.checkpoint import load_checkpoint
from ctcasr.config import FrontendConfig, ModelConfig, OptimConfig, RNNConfig, load_config
from ctcasr.data.dataset import ASRDataset
from ctcasr.data.manifest import read_manifest
from ctcasr.errors import CtcasrError
from ctcasr.models import build_model
from ctcasr.tokenizer import CharTokenizer
from ctcasr.train.average import average_checkpoints, average_state_dicts, select_epochs
from ctcasr.train.setup import adamw
from ctcasr.train.trainer import train, train_step


def run_train(config, manifest, exp, overrides=(), resume=False):
    return train(load_config(config, list(overrides)), manifest, manifest, exp, resume=resume)


def test_accumulating_k_batches_equals_one_k_times_larger_batch(corpus):
    utts = read_manifest(corpus)
    tok = CharTokenizer.train(u.text for u in utts)
    cfg = load_config(None, ["data.features.sample_rate=8000", "data.features.num_mel_bins=23"])
    ds = ASRDataset(utts[:6], cfg.data.features, tok)
    parts = [ds.collate([ds[i] for i in idx]) for idx in ([0, 1], [2, 3, 4], [5])]
    whole = ds.collate([ds[i] for i in range(6)])

    def step(batches):
        torch.manual_seed(0)
        model = build_model(
            ModelConfig(frontend=FrontendConfig(4, 4, 8), encoder_conf=RNNConfig(8, 2, 0.0)),
            23, tok.vocab_size, torch.zeros(23), torch.ones(23) * 5,
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        res = train_step(model, opt, batches, 6, max_norm=100.0)
        return res, torch.nn.utils.parameters_to_vector(model.parameters()).detach()

    acc, w_acc = step(parts)
    one, w_one = step([whole])
    assert acc.ok and acc.loss == pytest.approx(one.loss, rel=1e-5)
    assert acc.grad_norm == pytest.approx(one.grad_norm, rel=1e-4)
    assert torch.allclose(w_acc, w_one, atol=1e-6)
    assert not torch.allclose(w_acc, step(parts[:1])[1], atol=1e-4)  # the test can fail


@pytest.mark.parametrize("encoder", ["lstm", "conformer"])
def test_padding_the_time_axis_to_a_multiple_changes_no_step(encoder, corpus):
    """``data.pad_to_multiple_of``: a batch padded to a multiple of 64 frames makes the same
    training step (loss, gradient, weights) as the batch padded to its longest member only."""
    from test_models import encoder_conf

    utts = read_manifest(corpus)
    tok = CharTokenizer.train(u.text for u in utts)
    cfg = load_config(None, ["data.features.sample_rate=8000", "data.features.num_mel_bins=9"])
    ds = ASRDataset(utts[:5], cfg.data.features, tok)
    items = [ds[i] for i in range(5)]
    plain, padded = ds.collate(items), ds.collate(items, pad_to=64)
    assert padded.feats.shape[1] > plain.feats.shape[1]

    def step(batch):
        torch.manual_seed(0)
        model = build_model(
            ModelConfig(frontend=FrontendConfig(4, 4, 16), encoder=encoder,
                        encoder_conf=encoder_conf(encoder, dropout=0.0)),
            9, tok.vocab_size, torch.zeros(9), torch.ones(9) * 5,
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        res = train_step(model, opt, [batch], 5, max_norm=100.0)
        return res, torch.nn.utils.parameters_to_vector(model.parameters()).detach()

    (a, wa), (b, wb) = step(plain), step(padded)
    assert a.ok and b.ok
    assert a.loss == pytest.approx(b.loss, rel=1e-5)
    assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-4)
    assert torch.allclose(wa, wb, atol=1e-5)
    assert not torch.allclose(wa, step(ds.collate(items[:4]))[1], atol=1e-4)  # it can fail


def test_accum_grad_in_the_trainer_counts_steps(tiny_config, corpus, tmp_path):
    one = run_train(tiny_config, corpus, tmp_path / "a", ["train.epochs=1"])
    two = run_train(tiny_config, corpus, tmp_path / "b", ["train.epochs=1", "train.accum_grad=2"])
    assert two.step == (one.step + 1) // 2


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(tiny_config, corpus, tmp_path,
                                                              monkeypatch, caplog):
    from ctcasr.models import ctc

    real = ctc.ctc_loss
    calls = {"n": 0}

    def nan_first(*a, **k):  # the first step is NaN, then real losses
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 1 else loss

    monkeypatch.setattr(ctc, "ctc_loss", nan_first)
    state = run_train(tiny_config, corpus, tmp_path / "one", ["train.epochs=1"])
    assert state.skipped_steps == 1 and state.bad_in_row == 0 and state.step > 0
    assert "non-finite loss" in caplog.text and "utt0" in caplog.text

    monkeypatch.setattr(ctc, "ctc_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(CtcasrError, match="3 non-finite steps in a row"):
        run_train(tiny_config, corpus, tmp_path / "all", ["train.max_bad_steps=3"])
    last = load_checkpoint(tmp_path / "all" / "last.pt")
    st = last["train_state"]["state"]
    assert st["step"] == 0 and st["skipped_steps"] == 3 and st["batch_in_epoch"] == 3
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_early_stopping(tiny_config, corpus, tmp_path):
    # lr 0 after the first epoch: validation cannot improve, so patience 2 stops at epoch 3
    st = run_train(tiny_config, corpus, tmp_path / "e",
                   ["train.epochs=8", "train.patience=2", "scheduler.name=step",
                    "scheduler.milestones=[1]", "scheduler.gamma=0.0"])
    assert len(st.history) == 3 and st.best_epoch == 1


def test_average_state_dicts_is_the_mean():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([1.5]), "n": torch.tensor(4)}
    avg = average_state_dicts([a, b])
    assert avg["w"].tolist() == [2.0, 4.0] and avg["b"].tolist() == [1.0]
    assert avg["n"].item() == 4 and avg["n"].dtype == torch.int64


def test_select_epochs():
    h = [{"epoch": e, "valid_wer": w, "valid_loss": 1.0} for e, w in
         [(1, 50.0), (2, 10.0), (3, 20.0), (4, 10.0), (5, 30.0)]]
    assert select_epochs(h, 2, "best") == [2, 4]
    assert select_epochs(h, 3, "best") == [2, 3, 4]
    assert select_epochs(h, 2, "last") == [4, 5]
    # early in a hard task WER is ~100 % everywhere and says nothing; the loss still ranks
    h = [{"epoch": e, "valid_wer": w, "valid_loss": loss} for e, w, loss in
         [(1, 99.9, 86.7), (2, 99.7, 76.2), (3, 99.9, 71.6), (4, 100.0, 70.1)]]
    assert select_epochs(h, 2, "best") == [2, 3] and select_epochs(h, 2, "loss") == [3, 4]
    # CER ranks where WER is flat and the loss has turned (over-fitting: the loss rises while
    # the characters still improve)
    h = [{"epoch": e, "valid_wer": 81.0, "valid_cer": c, "valid_loss": loss} for e, c, loss in
         [(1, 45.1, 44.9), (2, 44.6, 43.9), (3, 43.3, 45.2), (4, 43.0, 45.1), (5, 44.0, 46.0)]]
    assert select_epochs(h, 2, "cer") == [3, 4] and select_epochs(h, 2, "loss") == [1, 2]
    with pytest.raises(CtcasrError, match=r"epochs \[1\] have no valid_cer"):
        select_epochs([{"epoch": 1, "valid_wer": 1.0, "valid_loss": 1.0}], 1, "cer")


def test_train_average_option_and_cli(tiny_config, corpus, tmp_path, capsys, monkeypatch):
    exp = tmp_path / "avg"
    st = run_train(tiny_config, corpus, exp, ["train.average=2", "train.average_select=last",
                                              "train.keep_epochs=1"])
    model = load_checkpoint(exp / "model.pt")
    assert model["averaged_from"] == [str(exp / "epoch-2.pt"), str(exp / "epoch-3.pt")]
    e2, e3 = (load_checkpoint(exp / f"epoch-{e}.pt")["model"] for e in (2, 3))
    for k, v in model["model"].items():
        if v.is_floating_point():
            assert torch.allclose(v, (e2[k] + e3[k]) / 2, atol=1e-7), k
    assert st.epoch == 3

    from tests.test_cli import run_cli

    code, out, err = run_cli(["average", exp, "--num", "2", "--select", "last", "--out",
                              tmp_path / "a.pt"], capsys, monkeypatch)
    assert code == 0, err
    again = load_checkpoint(tmp_path / "a.pt")
    assert all(torch.equal(v, again["model"][k]) for k, v in model["model"].items())
    code, _, err = run_cli(["average", exp, "--num", "3", "--select", "last", "--out",
                            tmp_path / "b.pt"], capsys, monkeypatch)
    assert code == 1 and "epoch-1.pt no longer exist" in err


def test_average_refuses_different_architectures(tiny_config, corpus, tmp_path):
    run_train(tiny_config, corpus, tmp_path / "a", ["train.epochs=1"])
    run_train(tiny_config, corpus, tmp_path / "b", ["train.epochs=1",
                                                    "model.encoder_conf.hidden_size=8"])
    with pytest.raises(CtcasrError, match="model.encoder_conf.hidden_size"):
        average_checkpoints([tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt"])


def test_log_tensorboard_and_plot(tiny_config, corpus, tmp_path, capsys, monkeypatch):
    exp = tmp_path / "e"
    run_train(tiny_config, corpus, exp, ["train.epochs=2"])
    recs = [json.loads(x) for x in (exp / "train_log.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if "loss" in r]
    assert {"step", "loss", "lr", "grad_norm", "audio_s_per_s", "real_frames"} <= set(
        train_recs[0])
    assert all(0 < r["real_frames"] <= 1 for r in train_recs)
    pytest.importorskip("tensorboard")
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))
    pytest.importorskip("matplotlib")
    from tests.test_cli import run_cli

    code, out, err = run_cli(["plot", exp], capsys, monkeypatch)
    assert code == 0, err
    png = (exp / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_amp_on_a_cpu_without_native_bf16_trains_fp32(tiny_config, corpus, tmp_path, caplog,
                                                       monkeypatch):
    """train.amp on a CPU that would emulate bf16, and fp16 on any CPU: ignored with a warning
    that says why, the run bit for bit the fp32 one; auto is fp32 there without a warning."""
    from ctcasr.train import setup
    monkeypatch.setattr(setup, "native_16bit", lambda: {"bf16": False, "fp16": True})
    a = run_train(tiny_config, corpus, tmp_path / "a", ["train.epochs=1", "train.device=cpu"])
    wa = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    for amp in ("bf16", "fp16"):
        b = run_train(tiny_config, corpus, tmp_path / amp, ["train.epochs=1", "train.device=cpu",
                                                             f"train.amp={amp}"])
        assert f"train.amp={amp} ignored on cpu" in caplog.text
        wb = load_checkpoint(tmp_path / amp / "last.pt")["model"]
        assert a.step == b.step and all(torch.equal(v, wb[k]) for k, v in wa.items())
    assert "no AVX512-BF16 / AMX-BF16" in caplog.text and "slower than fp32" in caplog.text
    caplog.clear()
    auto = run_train(tiny_config, corpus, tmp_path / "auto", ["train.epochs=1", "train.device=cpu",
                                                             "train.amp=auto"])
    w = load_checkpoint(tmp_path / "auto" / "last.pt")["model"]
    assert a.step == auto.step and all(torch.equal(v, w[k]) for k, v in wa.items())
    assert "ignored" not in caplog.text  # auto says nothing louder than an info line


TINY_CONFORMER = ["model.encoder=conformer", "train.device=cpu",
                  'model.encoder_conf={"d_model": 16, "num_layers": 2, "num_heads": 2, '
                  '"ffn_dim": 32, "conv_kernel": 5, "dropout": 0.1}']


def test_bf16_autocast_on_a_cpu_that_has_it(tiny_config, corpus, tmp_path, caplog, monkeypatch):
    """train.amp=bf16 where the CPU computes in bf16 (forced here: elsewhere torch emulates it,
    slowly, with the same numbers): the step runs under autocast, so the weights move off the
    fp32 run's but stay near them, the loss is still fp32's within bf16 rounding, and resuming
    is still bit for bit the uninterrupted run."""
    from ctcasr.train import setup
    monkeypatch.setattr(setup, "native_16bit", lambda: {"bf16": True, "fp16": False})
    caplog.set_level("INFO", logger="ctcasr")
    fp32 = run_train(tiny_config, corpus, tmp_path / "fp32", TINY_CONFORMER)
    bf16 = [*TINY_CONFORMER, "train.amp=bf16"]
    full = run_train(tiny_config, corpus, tmp_path / "full", bf16)
    assert "bf16 autocast on this CPU" in caplog.text
    part = run_train(tiny_config, corpus, tmp_path / "part", [*bf16, "train.max_steps=4"])
    assert part.step == 4 < full.step == fp32.step
    run_train(tiny_config, corpus, tmp_path / "part", bf16, resume=True)
    w32 = load_checkpoint(tmp_path / "fp32" / "last.pt")["model"]
    w16 = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert all(torch.equal(v, resumed[k]) for k, v in w16.items())
    run_train(tiny_config, corpus, tmp_path / "auto", [*TINY_CONFORMER, "train.amp=auto"])
    auto = load_checkpoint(tmp_path / "auto" / "last.pt")["model"]
    assert all(torch.equal(v, auto[k]) for k, v in w16.items())  # auto is bf16 here
    assert all(v.dtype == torch.float32 for v in w16.values() if v.is_floating_point())
    moved = [k for k, v in w32.items() if v.is_floating_point() and not torch.equal(v, w16[k])]
    assert moved  # bf16 arithmetic happened
    drift = max(float((w16[k] - w32[k]).abs().max() / (w32[k].abs().max() + 1e-8)) for k in moved)
    assert drift < 0.2

    def train_losses(exp):
        records = map(json.loads, (exp / "train_log.jsonl").read_text().splitlines())
        return [r["loss"] for r in records if "loss" in r]

    l32, l16 = train_losses(tmp_path / "fp32"), train_losses(tmp_path / "full")
    assert len(l32) == len(l16) > 4 and l16 != l32
    assert l16 == pytest.approx(l32, rel=0.02)


def test_resume_with_augmentation_is_exact(tiny_config, corpus, tmp_path):
    aug = ["data.augment.speeds=[0.9,1.0,1.1]", "data.augment.time_masks=2",
           "data.augment.freq_masks=1", "data.augment.freq_mask_width=4"]
    full = run_train(tiny_config, corpus, tmp_path / "full", aug)
    part = run_train(tiny_config, corpus, tmp_path / "part", [*aug, "train.max_steps=5"])
    assert part.step == 5
    run_train(tiny_config, corpus, tmp_path / "part", aug, resume=True)
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    c = load_checkpoint(tmp_path / "full" / "model.pt")
    assert full.step > 5 and c["config"]["data"]["augment"]["speeds"] == [0.9, 1.0, 1.1]


@pytest.mark.parametrize("impl", ["auto", "fused", "foreach"])
def test_adamw_implementations_make_the_same_update(impl):
    """optim.impl: every implementation makes torch's reference update (the loop) within
    float rounding over 20 steps; auto is the fused kernel on the CPU."""
    def start():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))

    def run(which):
        model = start()
        opt = adamw(model, OptimConfig(impl=which), 1e-2)
        for step in range(20):
            torch.manual_seed(100 + step)
            opt.zero_grad()
            model(torch.randn(5, 6)).square().mean().backward()
            opt.step()
        return opt, torch.cat([p.detach().flatten() for p in model.parameters()])

    _, ref = run("loop")
    opt, got = run(impl)
    assert bool(opt.defaults["fused"]) is (impl in ("auto", "fused"))
    first = torch.cat([p.detach().flatten() for p in start().parameters()])
    assert (ref - first).abs().max() > 0.05  # 20 steps at 1e-2 moved the weights
    assert torch.allclose(got, ref, atol=1e-6)
