"""Distributed training on CPU: 2 gloo processes under torchrun == 1 process accumulating."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctcasr.checkpoint import load_checkpoint

NO_DROPOUT = ["data.max_utts_per_batch=2", "model.encoder_conf.dropout=0.0", "train.max_steps=3",
              "train.epochs=1",
              "train.save_every_steps=1"]


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if not exe.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed next to this Python")
    return [str(exe) if exe.exists() else "torchrun"]


def sets(overrides):
    return [x for o in overrides for x in ("--set", o)]


def test_two_gloo_processes_equal_one_process_accumulating_two(tiny_config, corpus, tmp_path):
    args = ["train", "-c", str(tiny_config), "--train", str(corpus), "--valid", str(corpus)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [*torchrun(), "--standalone", "--nproc_per_node=2", "-m", "ctcasr", *args,
         "--exp-dir", str(tmp_path / "ddp"), *sets(NO_DROPOUT)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "ctcasr", *args, "--exp-dir", str(tmp_path / "one"),
         *sets([*NO_DROPOUT, "train.accum_grad=2"])],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a = load_checkpoint(tmp_path / "ddp" / "last.pt")
    b = load_checkpoint(tmp_path / "one" / "last.pt")
    assert a["train_state"]["state"]["step"] == b["train_state"]["state"]["step"] == 3
    assert len(a["train_state"]["rng"]) == 2  # every process's RNG state is saved
    diff = max((a["model"][k] - v).abs().max().item() for k, v in b["model"].items())
    # float sums in another order; a wrong loss scale (e.g. not x world_size) gives ~1e-3
    assert diff < 1e-5, diff
    assert (tmp_path / "ddp" / "model.pt").exists()
    assert "2 process(es)" in ddp.stderr and ddp.stderr.count("epoch 1: valid loss") == 1
    # resuming the DDP run on 2 processes continues it into epoch 2
    res = subprocess.run(
        [*torchrun(), "--standalone", "--nproc_per_node=2", "-m", "ctcasr", *args,
         "--exp-dir", str(tmp_path / "ddp"), "--resume",
         *sets([*NO_DROPOUT[:2], "train.max_steps=4", "train.epochs=2"])],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["train_state"]["state"]["step"] == 4
