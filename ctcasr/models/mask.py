"""Padding masks, built here and nowhere else.

Convention: ``make_pad_mask(lengths, max_len)[b, t]`` is **True at padding** (t >= lengths[b]),
the convention of ``torch.nn.MultiheadAttention(key_padding_mask=...)``.

``make_attn_mask`` is the same information in the form
``torch.nn.functional.scaled_dot_product_attention`` wants, whose boolean ``attn_mask`` has the
opposite convention: True where a query **may attend** (a real key), False at padded keys.
"""

from __future__ import annotations

import torch


def make_pad_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """[B] int lengths -> [B, max_len] bool, True where the frame is padding."""
    max_len = int(lengths.max()) if max_len is None else max_len
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) >= lengths.unsqueeze(1)


def make_attn_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """[B] lengths -> [B, 1, 1, max_len] bool for ``scaled_dot_product_attention``: True at
    real keys (the inverse of :func:`make_pad_mask`), broadcast over heads and queries."""
    return ~make_pad_mask(lengths, max_len)[:, None, None, :]


def make_chunk_mask(length: int, chunk: int, left: int = -1,
                    device: torch.device | None = None) -> torch.Tensor:
    """[length, length] bool for chunked self-attention (WeNet's U2): query ``i`` may attend key
    ``j`` when ``j``'s chunk (of ``chunk`` frames) is ``i``'s or one of the ``left`` before it
    (``left`` < 0: all before it); True where it may, as :func:`make_attn_mask`."""
    idx = torch.arange(length, device=device) // chunk
    ok = idx.unsqueeze(0) <= idx.unsqueeze(1)
    if left >= 0:
        ok = ok & (idx.unsqueeze(0) >= idx.unsqueeze(1) - left)
    return ok
