"""Conformer encoder (Gulati et al., 2020) in which padding never reaches a real frame.

A block is, with pre-norm residuals (:class:`ctcasr.models.transformer.Residual`)::

    x + 1/2 FFN -> x + self-attention -> x + convolution module -> x + 1/2 FFN -> LayerNorm

Attention, feed-forward networks and positions are shared with the Transformer
(:mod:`ctcasr.models.transformer`, which also explains the padding handling). What is particular
here is the convolution module, the one place where neighbouring frames are mixed:

- the padded frames are zeroed after the GLU and right before the depthwise convolution (the
  pointwise convolution's bias makes them non-zero even when the block's input is zero there),
  so the kernel reads zeros past the end, as it would at the end of the utterance alone;
- the normalisation after the depthwise convolution is a per-frame LayerNorm, not BatchNorm:
  BatchNorm's batch statistics would mix padded frames (and other utterances) into every frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctcasr.config import ConformerConfig
from ctcasr.models.transformer import (
    AttentionEncoder,
    Block,
    Context,
    FeedForward,
    Residual,
    SelfAttention,
)


class DepthwiseConv(nn.Conv1d):
    """Depthwise convolution over time, ``forward(x [B,T,C], ctx) -> [B,T,C]``, that reads
    zeros past the end of each utterance (its padded frames are zeroed first: the layers before
    may have made them non-zero) and, streaming (``ctx.cache``), the last ``kernel - 1`` frames
    of the chunks before. ``causal``: only past frames (``right`` = 0), as streaming needs."""

    def __init__(self, channels: int, kernel: int, causal: bool) -> None:
        super().__init__(channels, channels, kernel, groups=channels)
        self.left = kernel - 1 if causal else kernel // 2
        self.right = kernel - 1 - self.left

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:  # type: ignore[override]
        x = x.masked_fill(ctx.pad.unsqueeze(-1), 0.0)
        if ctx.cache is not None:  # streaming (causal): the frames before this chunk
            before = ctx.cache.get(self)
            if before is None:
                before = x.new_zeros(x.shape[0], self.left, x.shape[2])
            x = torch.cat([before, x], dim=1)
            ctx.cache[self] = x[:, x.shape[1] - self.left :]
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        return super().forward(F.pad(x.transpose(1, 2), (self.left, self.right))).transpose(1, 2)


class ConvModule(nn.Module):
    """Pointwise conv (D -> 2D) -> GLU -> depthwise conv -> LayerNorm -> Swish -> pointwise conv.

    [B,T,D] -> [B,T,D]. The pointwise convolutions are per-frame ``nn.Linear`` layers (the same
    thing as kernel-1 ``Conv1d`` without the transposes).
    """

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.pointwise_in = nn.Linear(d, 2 * d)
        self.depthwise = DepthwiseConv(d, cfg.conv_kernel, cfg.causal)
        self.norm = nn.LayerNorm(d)
        self.pointwise_out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        x = self.depthwise(F.glu(self.pointwise_in(x), dim=-1), ctx)
        return self.pointwise_out(F.silu(self.norm(x)))


def conformer_block(cfg: ConformerConfig) -> Block:
    return Block(
        {
            "ffn1": Residual(cfg, FeedForward(cfg), scale=0.5),
            "attn": Residual(cfg, SelfAttention(cfg)),
            "conv": Residual(cfg, ConvModule(cfg)),
            "ffn2": Residual(cfg, FeedForward(cfg), scale=0.5),
        },
        norm=nn.LayerNorm(cfg.d_model),
    )


class ConformerEncoder(AttentionEncoder):
    """``forward(x [B,T,input_dim], x_lens [B]) -> (y [B,T,d_model], x_lens)``; padding is 0."""

    def __init__(self, input_dim: int, cfg: ConformerConfig) -> None:
        super().__init__(input_dim, cfg, conformer_block, final_norm=False)
