"""Issue 6, points 2 and 4 in a training run: non-finite losses and gradients are skipped,
counted and logged with the utterance ids; too many in a row stop the run with one line and a
usable last.pt; a full disk stops it with one line, and --resume then ends as an uninterrupted
run would."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from ctcasr import checkpoint
from ctcasr.checkpoint import load_checkpoint
from ctcasr.config import load_config
from ctcasr.models import ctc
from ctcasr.train.trainer import train
from tests.test_cli import run_cli

EPOCH = ["--set", "train.epochs=1"]


class NanGradient(torch.autograd.Function):
    """Identity whose gradient is NaN: a finite loss with non-finite gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def spoil_first_step(monkeypatch, how: str) -> None:
    real, calls = ctc.ctc_loss, []

    def loss(*a, **k):
        calls.append(1)
        out = real(*a, **k)
        if len(calls) > 1:
            return out
        return NanGradient.apply(out) if how == "nan-gradient" else out * float(how)

    monkeypatch.setattr(ctc, "ctc_loss", loss)


@pytest.mark.parametrize("how", ["nan", "inf", "nan-gradient"])
def test_a_non_finite_step_is_skipped_counted_and_logged(how, tiny_config, corpus, tmp_path,
                                                         monkeypatch, caplog):
    spoil_first_step(monkeypatch, how)
    state = train(load_config(tiny_config, ["train.epochs=1"]), corpus, corpus, tmp_path / "e")
    assert state.skipped_steps == 1 and state.bad_in_row == 0 and state.step > 0
    (line,) = [x for x in caplog.messages if "non-finite" in x]
    assert "at step 1, step skipped (1 in a row); utterances: utt0" in line
    last = load_checkpoint(tmp_path / "e" / "last.pt")
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_too_many_non_finite_steps_stop_with_one_line_and_a_usable_checkpoint(
        tiny_config, corpus, tmp_path, capsys, monkeypatch):
    exp = tmp_path / "e"
    train_args = ["train", "-c", tiny_config, "--train", corpus, "--valid", corpus,
                  "--exp-dir", exp, *EPOCH, "--set", "train.max_bad_steps=2"]
    with monkeypatch.context() as m:
        real = ctc.ctc_loss
        m.setattr(ctc, "ctc_loss", lambda *a, **k: real(*a, **k) * float("nan"))
        code, _, err = run_cli(train_args, capsys, monkeypatch)
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 1 and len(lines) == 1, err
    assert "2 non-finite steps in a row (train.max_bad_steps)" in lines[0]
    assert f"weights before them are in {exp / 'last.pt'}" in lines[0]
    code, out, err = run_cli(["decode", "--checkpoint", exp / "last.pt", "--manifest", corpus,
                              "--out-dir", tmp_path / "d"], capsys, monkeypatch)
    assert code == 0 and "WER" in out, err
    code, _, err = run_cli([*train_args, "--resume"], capsys, monkeypatch)  # cause removed
    assert code == 0 and (exp / "model.pt").exists(), err


def test_a_full_disk_stops_training_with_one_line_and_resume_ends_as_uninterrupted(
        tiny_config, corpus, tmp_path, capsys, monkeypatch):
    args = ["train", "-c", tiny_config, "--train", corpus, "--valid", corpus,
            "--set", "train.save_every_steps=2"]
    code, _, err = run_cli([*args, "--exp-dir", tmp_path / "ref"], capsys, monkeypatch)
    assert code == 0, err
    real, saves = checkpoint.torch.save, []

    def fills_the_disk(obj, f):
        saves.append(1)
        if len(saves) == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(obj, f)

    exp = tmp_path / "e"
    with monkeypatch.context() as m:
        m.setattr(checkpoint.torch, "save", fills_the_disk)
        code, _, err = run_cli([*args, "--exp-dir", exp], capsys, monkeypatch)
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert "could not write checkpoint (No space left on device)" in lines[0]
    assert load_checkpoint(exp / "last.pt")["train_state"]["state"]["step"] > 0
    code, _, err = run_cli([*args, "--exp-dir", exp, "--resume"], capsys, monkeypatch)
    assert code == 0, err
    a, b = (load_checkpoint(tmp_path / d / "model.pt")["model"] for d in ("ref", "e"))
    assert all(torch.equal(v, b[k]) for k, v in a.items())
