"""Greedy (best path) CTC decoding: argmax per frame, merge repeats, drop blanks."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ctcasr.tokenizer import BLANK_ID


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float  # log-probability (of the best path for greedy)
    frames: list[int] = field(default_factory=list)  # frame index where each token is emitted


def greedy_search(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[Hypothesis]]:
    best, idx = log_probs.max(dim=-1)  # [B, T]
    # A frame emits its label when it is not blank and differs from the previous frame's label.
    prev = torch.nn.functional.pad(idx[:, :-1], (1, 0), value=BLANK_ID)
    emit = (idx != BLANK_ID) & (idx != prev)
    out = []
    for b, n in enumerate(lengths.tolist()):
        frames = emit[b, :n].nonzero().squeeze(1).tolist()
        tokens = idx[b, frames].tolist()
        out.append([Hypothesis(tokens, float(best[b, :n].sum()), frames)])
    return out
