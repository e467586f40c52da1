"""E-Branchformer encoder (Kim et al., 2022; as ESPnet's ``EBranchformerEncoderLayer``).

A block runs self-attention (global context) and a convolutional gating MLP (local context)
side by side instead of one after the other as the Conformer does, and merges them::

    x + 1/2 FFN -> x + merge(self-attention(LN x), cgMLP(LN x)) -> x + 1/2 FFN -> LayerNorm

    cgMLP(x) = Linear_out(r * DepthwiseConv(LN g)),  (r, g) = halves of GELU(Linear_in x)
    merge(a, m) = Linear(c + DepthwiseConv(c)),  c = [a, m] (2 x d_model channels)

Feed-forward networks, attention, positions, chunked attention and streaming are the
Transformer's (:mod:`ctcasr.models.transformer`); both depthwise convolutions are the Conformer's
:class:`~ctcasr.models.conformer.DepthwiseConv`, which zeroes padded frames before it reads
them (so padding never reaches a real frame) and, with ``causal: true``, reads only past frames
and streams. ``conv_kernel`` is the cgMLP's kernel (ESPnet: 31), ``merge_kernel`` the merge's
(3), ``cgmlp_dim`` the cgMLP's width before the split (ESPnet's ``cgmlp_linear_units``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctcasr.config import EBranchformerConfig
from ctcasr.models.conformer import DepthwiseConv
from ctcasr.models.dropout import Dropout
from ctcasr.models.transformer import (
    AttentionEncoder,
    Block,
    Context,
    FeedForward,
    Residual,
    SelfAttention,
)


class CgMLP(nn.Module):
    """Convolutional gating MLP, [B,T,D] -> [B,T,D] (module doc)."""

    def __init__(self, cfg: EBranchformerConfig) -> None:
        super().__init__()
        half = cfg.cgmlp_dim // 2
        self.proj_in = nn.Linear(cfg.d_model, 2 * half)
        self.norm = nn.LayerNorm(half)
        self.conv = DepthwiseConv(half, cfg.conv_kernel, cfg.causal)
        self.dropout = Dropout(cfg.dropout)
        self.proj_out = nn.Linear(half, cfg.d_model)
        self.init_own()

    @torch.no_grad()
    def init_own(self) -> None:
        """The gate starts open (the convolution ~0, its bias 1): at first the cgMLP is a plain
        MLP, ``Linear_out(r)`` (ESPnet's initialisation of the gating unit)."""
        nn.init.normal_(self.conv.weight, std=1e-6)
        nn.init.ones_(self.conv.bias)

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        r, g = F.gelu(self.proj_in(x)).chunk(2, dim=-1)
        return self.proj_out(self.dropout(r * self.conv(self.norm(g), ctx)))


class Branches(nn.Module):
    """The two branches, each on its own LayerNorm of ``x``, merged; ``x +`` the merge."""

    def __init__(self, cfg: EBranchformerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.attn_norm, self.attn = nn.LayerNorm(d), SelfAttention(cfg)
        self.mlp_norm, self.mlp = nn.LayerNorm(d), CgMLP(cfg)
        self.merge_conv = DepthwiseConv(2 * d, cfg.merge_kernel, cfg.causal)
        self.merge = nn.Linear(2 * d, d)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        both = torch.cat([self.dropout(self.attn(self.attn_norm(x), ctx)),
                          self.dropout(self.mlp(self.mlp_norm(x), ctx))], dim=-1)
        return x + self.dropout(self.merge(both + self.merge_conv(both, ctx)))


def ebranchformer_block(cfg: EBranchformerConfig) -> Block:
    return Block(
        {
            "ffn1": Residual(cfg, FeedForward(cfg), scale=0.5),
            "branches": Branches(cfg),  # (its own residual: two norms, one sum)
            "ffn2": Residual(cfg, FeedForward(cfg), scale=0.5),
        },
        norm=nn.LayerNorm(cfg.d_model),
    )


class EBranchformerEncoder(AttentionEncoder):
    """``forward(x [B,T,input_dim], x_lens [B]) -> (y [B,T,d_model], x_lens)``; padding is 0."""

    def __init__(self, input_dim: int, cfg: EBranchformerConfig) -> None:
        super().__init__(input_dim, cfg, ebranchformer_block, final_norm=False)
