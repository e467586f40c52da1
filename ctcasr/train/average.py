"""Checkpoint averaging: the mean of the weights of several epoch checkpoints.

Which epochs: the last N, or the best N by validation WER, CER or loss (ties: lower loss),
chosen from the run's validation history. Floating-point tensors are averaged in float64 and
cast back; integer buffers (e.g. counters) must agree, or the newest one is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ctcasr.checkpoint import load_checkpoint
from ctcasr.errors import CtcasrError
from ctcasr.train.state import check_compatible

RANKS = {"best": "valid_wer", "cer": "valid_cer", "loss": "valid_loss"}


def select_epochs(history: Sequence[dict[str, Any]], n: int, select: str) -> list[int]:
    """Epoch numbers (1-based, ascending) to average, from the validation records."""
    if select == "last":
        chosen = [int(h["epoch"]) for h in history][-n:]
    elif select in RANKS:  # cer or loss: when WER says little (near 100 % early on)
        rank = RANKS[select]
        missing = [h["epoch"] for h in history if rank not in h]
        if missing:
            raise CtcasrError(f"average --select {select}: epochs {missing} have no {rank}")
        ranked = sorted(history, key=lambda h: (h[rank], h["valid_loss"], -h["epoch"]))
        chosen = [int(h["epoch"]) for h in ranked[:n]]
    else:
        raise CtcasrError(f"average: unknown selection {select!r} ({', '.join(RANKS)}, last)")
    return sorted(chosen)


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if not states:
        raise CtcasrError("average: no checkpoints to average")
    out: dict[str, torch.Tensor] = {}
    for k, last in states[-1].items():
        vals = [s[k] for s in states]
        if last.is_floating_point():
            mean = torch.stack([v.to(torch.float64) for v in vals]).mean(0)
            out[k] = mean.to(last.dtype)
        else:
            out[k] = last.clone()
    return out


def average_checkpoints(paths: Sequence[Path]) -> dict[str, Any]:
    """A checkpoint (without training state) whose weights are the mean of ``paths``'."""
    ckpts = [load_checkpoint(p) for p in paths]
    first = ckpts[0]
    for p, c in zip(paths[1:], ckpts[1:], strict=True):
        check_compatible(first["config"], c["config"], str(p))
        if set(c["model"]) != set(first["model"]):
            raise CtcasrError(f"{p}: holds different weights than {paths[0]}")
    out = {k: v for k, v in ckpts[-1].items() if k not in ("train_state", "format")}
    out["model"] = average_state_dicts([c["model"] for c in ckpts])
    out["averaged_from"] = [str(p) for p in paths]
    return out


def exp_checkpoints(exp_dir: Path, n: int, select: str) -> list[Path]:
    """The epoch checkpoints of a finished or running experiment to average."""
    last = exp_dir / "last.pt"
    if not last.exists():
        raise CtcasrError(f"{exp_dir}: no last.pt (not an experiment folder?)")
    history = load_checkpoint(last)["train_state"]["state"]["history"]
    epochs = select_epochs(history, n, select)
    paths = [exp_dir / f"epoch-{e}.pt" for e in epochs]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise CtcasrError(
            f"{exp_dir}: {', '.join(missing)} no longer exist (pruned; raise train.keep_epochs "
            "or set train.average when training)"
        )
    return paths
