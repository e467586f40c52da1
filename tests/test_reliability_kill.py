"""Issue 6, point 1: ``kill -9`` anywhere, then ``--resume``: the final weights are bitwise those
of an uninterrupted run.

One run is killed four times, at points drawn at random (the seed is in the failure message):
before its first checkpoint, mid-epoch after a random number of steps, while ``last.pt`` is
being written, and while an epoch checkpoint is being written. The test hook
``CTCASR_TEST_CHECKPOINT_PAUSE`` holds every checkpoint between its temporary file and the
rename, so the last two kills land inside a checkpoint write deterministically.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from ctcasr.checkpoint import PAUSE_ENV, load_checkpoint

SETTINGS = ["train.epochs=3", "train.save_every_steps=1", "train.num_threads=1",
            "data.max_frames_per_batch=250", "train.tensorboard=false"]
LOG_KEYS = ("step", "epoch", "loss", "lr", "grad_norm", "valid_loss", "valid_wer", "valid_cer")


class Run:
    """``ctcasr train`` in a subprocess; its stderr goes to a file next to the experiment."""

    def __init__(self, config: Path, corpus: Path, exp: Path, resume: bool, pause: float = 0.0):
        env = {**os.environ, "OMP_NUM_THREADS": "1", PAUSE_ENV: str(pause)}
        args = [sys.executable, "-m", "ctcasr", "train", "-c", str(config), "--train",
                str(corpus), "--valid", str(corpus), "--exp-dir", str(exp),
                *(x for s in SETTINGS for x in ("--set", s)), *(["--resume"] if resume else [])]
        self.err_path = exp.with_name(f"{exp.name}.{time.monotonic_ns()}.err")
        with self.err_path.open("w") as err:
            self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err)

    def err(self) -> str:
        return self.err_path.read_text()[-3000:]

    def finish(self, timeout: float = 300.0) -> str:
        assert self.proc.wait(timeout) == 0, self.err()
        return self.err()

    def kill_when(self, ready, why: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{why}: the run ended first:\n{self.err()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{why}: not reached in {timeout} s")
            time.sleep(0.005)
        self.kill()
        assert self.proc.returncode == -signal.SIGKILL, why

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class Replacements:
    """Counts how many times ``path`` was replaced (atomic renames give it a new inode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.inode, self.count = self._inode(), 0

    def _inode(self) -> int | None:
        try:
            return self.path.stat().st_ino
        except FileNotFoundError:
            return None

    def at_least(self, n: int) -> bool:
        inode = self._inode()
        if inode != self.inode:
            self.inode, self.count = inode, self.count + 1
        return self.count >= n


def temporaries(exp: Path, name: str) -> list[Path]:
    return list(exp.glob(f".{name}.*.tmp"))


def log_records(exp: Path) -> list[dict]:
    recs = [json.loads(x) for x in (exp / "train_log.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in LOG_KEYS if k in r} for r in recs]


def test_kill_9_anywhere_then_resume_gives_bitwise_the_same_weights(tiny_config, corpus,
                                                                    tmp_path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    msg = f"(kill points drawn with seed {seed})"
    ref_exp, exp = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = Run(tiny_config, corpus, ref_exp, resume=False)
    pause = 0.15
    try:
        # 1. before the first checkpoint (reading the data): --resume starts the run again
        run = Run(tiny_config, corpus, exp, resume=False, pause=pause)
        run.kill_when((exp / "config.yaml").exists, f"before the first checkpoint {msg}")
        assert not (exp / "last.pt").exists()

        # 2. mid-epoch, a random number of steps and a random fraction of a step later
        run = Run(tiny_config, corpus, exp, resume=True, pause=pause)
        saves, n = Replacements(exp / "last.pt"), rng.randint(2, 5)
        extra = time.monotonic() + rng.uniform(0, pause)
        run.kill_when(lambda: saves.at_least(n) and time.monotonic() > extra,
                      f"after {n} steps {msg}")

        # 3. while last.pt is being written: the temporary file is left behind
        run = Run(tiny_config, corpus, exp, resume=True, pause=pause)
        saves = Replacements(exp / "last.pt")
        run.kill_when(lambda: saves.at_least(1) and temporaries(exp, "last.pt"),
                      f"while writing last.pt {msg}")
        assert temporaries(exp, "last.pt")
        before = load_checkpoint(exp / "last.pt")["train_state"]["state"]["step"]

        # 4. while an epoch checkpoint is being written
        run = Run(tiny_config, corpus, exp, resume=True, pause=pause)
        run.kill_when(lambda: temporaries(exp, "epoch-*.pt"), f"while writing epoch-N.pt {msg}")

        # 5. the last resume runs to the end
        err = Run(tiny_config, corpus, exp, resume=True).finish()
        assert "resumed from" in err and "removed" in err  # the litter of kill 4
        reference.finish()
    finally:
        reference.kill()
        run.kill()

    final = load_checkpoint(exp / "last.pt")
    assert final["train_state"]["state"]["step"] > before
    for name in ("last.pt", "model.pt", "best.pt"):
        a, b = load_checkpoint(ref_exp / name)["model"], load_checkpoint(exp / name)["model"]
        assert a.keys() == b.keys()
        for k, v in a.items():
            assert torch.equal(v, b[k]), f"{name}: {k} differs {msg}"
    assert log_records(exp) == log_records(ref_exp), msg  # redone steps are logged once
    assert not list(exp.glob(".*.tmp")), msg
