"""Dropout whose mask costs less on the CPU.

``torch.nn.Dropout`` draws each element's mask with ``bernoulli_``, one call of the CPU generator
(Mersenne Twister) per element: 11-15 % of an attention encoder's training step on 2 cores
(docs/training.md, "Speed against the cores' limit"). :class:`Dropout` draws 31 random bits per
call instead and makes two elements' masks of them, 15 bits each: an element is dropped when its
15 bits fall under ``round(p * 32768)``, so the rate is ``p`` to within 1/65536, and the kept
elements are scaled by the inverse of the exact keep rate (the expectation is ``x``, as with
``nn.Dropout``). The bits come from torch's default generator, so ``torch.manual_seed`` and a
checkpoint's RNG state make it repeat exactly, as before. Off the CPU (CUDA has its own fast
kernel), and in evaluation, it is ``nn.Dropout``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_BITS = 32768  # 15 bits per element


def dropout_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> torch.Tensor:
    """A mask of ``shape``: 0 with probability ``p`` (to 1/65536), else 1 / (keep rate)."""
    n = shape.numel()
    drop = round(p * _BITS)
    if drop >= _BITS:
        return torch.zeros(shape, dtype=dtype)
    words = torch.empty((n + 1) // 2, dtype=torch.int32).random_()  # 31 random bits each
    halves = words.view(torch.int16)[:n].view(shape)  # both halves: 15 random bits after & 7FFF
    keep = torch.bitwise_and(halves, 0x7FFF) >= drop
    return keep.to(dtype).mul_(_BITS / (_BITS - drop))


class Dropout(nn.Dropout):
    """``nn.Dropout(p)`` with :func:`dropout_mask`'s cheaper draw on the CPU when training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.p >= 1.0:
            return F.dropout(x, self.p, self.training, self.inplace)
        return x * dropout_mask(x.shape, self.p, x.dtype)
