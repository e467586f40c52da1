"""Runtime state of a run (saved with every checkpoint, never mixed into the config), RNG
state capture, and the architecture check made before weights are reused."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from ctcasr.config import Config, to_dict
from ctcasr.errors import CtcasrError

# Config sections that must match a checkpoint for its weights to be reused.
ARCHITECTURE_KEYS = ("data.features", "tokenizer", "model")


@dataclass
class TrainState:
    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # batches of ``epoch``'s global list already trained
    step: int = 0  # optimizer steps taken
    best_wer: float = math.inf
    best_loss: float = math.inf
    best_epoch: int = 0  # 1-based; 0 = none yet
    skipped_steps: int = 0  # non-finite loss / gradient, in total ...
    bad_in_row: int = 0  # ... and in a row
    infeasible_utts: int = 0  # labels longer than the encoder output allows
    history: list[dict[str, float]] = field(default_factory=list)  # one record per validation
    # [set, utterance id, why]: unreadable utterances left out by --skip-bad before training
    unreadable: list[list[str]] = field(default_factory=list)

    def valid_losses(self) -> list[float]:
        return [h["valid_loss"] for h in self.history]


def rng_state() -> dict[str, Any]:
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(_as_tuple(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def check_compatible(saved: dict[str, Any], cfg: Config | dict[str, Any], what: str) -> None:
    """Raise naming every architecture key where ``cfg`` differs from a checkpoint's config."""
    new = cfg.to_dict() if isinstance(cfg, Config) else cfg
    diffs: list[str] = []
    for section in ARCHITECTURE_KEYS:
        a, b = _lookup(saved, section), _lookup(new, section)
        diffs += [f"{section}.{k}" if k else section for k in _diff_keys(a, b)]
    if diffs:
        raise CtcasrError(
            f"{what}: was trained with a different model config; mismatching keys: "
            + ", ".join(diffs)
        )


def _lookup(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part, {}) if isinstance(d, dict) else {}
    return d


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if to_dict(a) == to_dict(b) else [prefix]
