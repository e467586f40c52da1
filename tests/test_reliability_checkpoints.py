"""Issue 6, points 2 and 6: atomic checkpoints (a failed save leaves the previous one intact and
says why; no temporary file is taken for a checkpoint) and safe loading (no pickled code, safe
YAML)."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
import torch

from ctcasr import checkpoint
from ctcasr.checkpoint import copy_checkpoint, load_checkpoint, remove_temporaries, save_checkpoint
from ctcasr.config import load_config
from ctcasr.errors import CtcasrError
from ctcasr.train.average import exp_checkpoints
from tests.test_cli import run_cli

REPO = Path(__file__).resolve().parents[1]


def weights(value: float) -> dict:
    return {"model": {"w": torch.full((1000,), value)}}


def no_space(obj, f):
    f.write(b"half a checkpoint")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def broken_pickle(obj, f):
    f.write(b"half a checkpoint")
    raise RuntimeError("cannot pickle 'generator' object\nmore lines")


@pytest.mark.parametrize("fail, says", [
    (no_space, "No space left on device"),
    (broken_pickle, "RuntimeError: cannot pickle 'generator' object"),
])
def test_a_failed_save_keeps_the_previous_checkpoint_and_says_why(fail, says, tmp_path,
                                                                  monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(weights(1.0), path)
    monkeypatch.setattr(checkpoint.torch, "save", fail)
    with pytest.raises(CtcasrError) as e:
        save_checkpoint(weights(2.0), path)
    assert str(e.value) == (f"{path}: could not write checkpoint ({says}); the previous last.pt, "
                            "if any, is intact")
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left


def test_a_full_disk_at_fsync_or_copy_and_an_interrupt_keep_the_previous_file(tmp_path,
                                                                             monkeypatch):
    src, dst = tmp_path / "epoch-1.pt", tmp_path / "best.pt"
    save_checkpoint(weights(1.0), src)
    save_checkpoint(weights(0.0), dst)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(checkpoint.os, "fsync", full)
        with pytest.raises(CtcasrError, match="best.pt: could not write checkpoint .No space"):
            copy_checkpoint(src, dst)
    with monkeypatch.context() as m:
        m.setattr(checkpoint.torch, "save", lambda o, f: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(weights(3.0), dst)
    assert torch.equal(load_checkpoint(dst)["model"]["w"], torch.zeros(1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "epoch-1.pt"]
    copy_checkpoint(src, dst)
    assert torch.equal(load_checkpoint(dst)["model"]["w"], torch.ones(1000))


def test_temporary_files_are_never_taken_for_checkpoints(tiny_config, corpus, tmp_path,
                                                         capsys, monkeypatch):
    exp = tmp_path / "exp"
    code, _, err = run_cli(["train", "-c", tiny_config, "--train", corpus, "--valid", corpus,
                            "--exp-dir", exp, "--set", "train.epochs=2"], capsys, monkeypatch)
    assert code == 0, err
    # what a kill during a save leaves: a hidden, partly written temporary file per checkpoint
    litter = [exp / f".{n}.0123abcd.tmp" for n in ("last.pt", "epoch-3.pt", "best.pt")]
    for p in litter:
        p.write_bytes(b"partial")
    (exp / "notes.tmp").write_text("not ours")
    assert exp_checkpoints(exp, 5, "last") == [exp / "epoch-1.pt", exp / "epoch-2.pt"]
    code, out, err = run_cli(["average", exp, "--num", "2", "--select", "last", "-o",
                              exp / "avg.pt"], capsys, monkeypatch)
    assert code == 0 and "epoch-1.pt, epoch-2.pt" in out, err
    assert remove_temporaries(exp) == sorted(litter)
    assert (exp / "notes.tmp").exists() and not list(exp.glob(".*.tmp"))
    # a torn file (say, copied by hand while being written) is a clear error, not a traceback
    torn = tmp_path / "torn.pt"
    torn.write_bytes((exp / "model.pt").read_bytes()[:5000])
    with pytest.raises(CtcasrError, match="torn.pt: not a readable checkpoint"):
        load_checkpoint(torn)


def test_checkpoints_get_the_usual_file_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(weights(1.0), tmp_path / "a.pt")
        copy_checkpoint(tmp_path / "a.pt", tmp_path / "b.pt")
    finally:
        os.umask(old)
    assert {(tmp_path / n).stat().st_mode & 0o777 for n in ("a.pt", "b.pt")} == {0o644}


class Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path, capsys,
                                                                       monkeypatch):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": {}, "x": Payload(marker)}, evil)
    with pytest.raises(CtcasrError, match="evil.pt: refused to load: it holds pickled objects"):
        load_checkpoint(evil)
    code, _, err = run_cli(["decode", "--checkpoint", evil, "--manifest", tmp_path / "m.jsonl",
                            "--out-dir", tmp_path / "out"], capsys, monkeypatch)
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 1 and len(lines) == 1 and "refused to load" in lines[0]
    assert not marker.exists()


def test_configs_are_read_with_safe_yaml(tmp_path):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"train: !!python/object/apply:pathlib.Path.touch [{marker}]\n")
    with pytest.raises(CtcasrError, match="evil.yaml: not valid YAML"):
        load_config(cfg)
    with pytest.raises(CtcasrError, match="not valid YAML|expected int"):
        load_config(None, [f"train.epochs=!!python/object/apply:pathlib.Path.touch [{marker}]"])
    assert not marker.exists()


def test_every_load_in_the_code_is_safe():
    """torch.load only with weights_only=True; YAML only through safe_load / safe_dump."""
    for path in (REPO / "ctcasr").rglob("*.py"):
        src = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", src):
            assert "weights_only=True" in call, f"{path}: {call}"
        assert not re.search(r"yaml\.(load|unsafe_load|full_load|dump)\(|pickle\.loads?\(", src), \
            path
