"""Padding masks, built here and nowhere else.

Convention: ``make_pad_mask(lengths, max_len)[b, t]`` is **True at padding** (t >= lengths[b]),
the convention of ``torch.nn.MultiheadAttention(key_padding_mask=...)``.
"""

from __future__ import annotations

import torch


def make_pad_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """[B] int lengths -> [B, max_len] bool, True where the frame is padding."""
    max_len = int(lengths.max()) if max_len is None else max_len
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) >= lengths.unsqueeze(1)
