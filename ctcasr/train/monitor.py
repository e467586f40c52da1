"""What a run reports: the JSON-lines log (always), TensorBoard events (when installed),
and the per-interval loss / throughput meter. Only the main process writes."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("ctcasr")


class TrainLog:
    """``train_log.jsonl``: one JSON object per log interval (step, loss, lr, grad_norm,
    throughput) and per validation (epoch, valid_loss, valid_wer, valid_cer)."""

    def __init__(self, exp_dir: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.path = exp_dir / "train_log.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.debug("tensorboard is not installed; writing train_log.jsonl only")
            else:
                self.tb = SummaryWriter(str(exp_dir / "tensorboard"))

    def write(self, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **rec}) + "\n")
        if self.tb is not None:
            group = "valid" if "valid_loss" in rec else "train"
            for k, v in rec.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{group}/{k.removeprefix('valid_')}", v, rec["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def trim_log(path: Path, step: int, epoch: int) -> None:
    """Keep the records written up to a checkpoint at ``step`` after ``epoch`` full epochs (a
    resumed run writes those that came after it again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines(keepends=True) if line.strip()
            and _before(json.loads(line), step, epoch)]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep))
    tmp.replace(path)


def _before(rec: dict[str, Any], step: int, epoch: int) -> bool:
    return rec["epoch"] <= epoch if "valid_loss" in rec else rec["step"] <= step


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Meter:
    """Loss and throughput over one log interval."""

    def __init__(self, frame_shift_s: float) -> None:
        self.frame_shift_s = frame_shift_s
        self.reset()

    def reset(self) -> None:
        self.loss, self.utts, self.frames, self.padded = 0.0, 0, 0, 0
        self.t0 = time.perf_counter()

    def add(self, loss: float, utts: int, frames: int, padded_frames: int) -> None:
        if math.isfinite(loss):
            self.loss += loss * utts
            self.utts += utts
        self.frames += frames
        self.padded += padded_frames

    def flush(self) -> dict[str, float]:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rec = {"loss": self.loss / max(self.utts, 1), "utts_per_s": self.utts / dt,
               "audio_s_per_s": self.frames * self.frame_shift_s / dt,
               "real_frames": self.frames / max(self.padded, 1)}
        self.reset()
        return rec
