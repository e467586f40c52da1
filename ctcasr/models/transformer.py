"""Self-attention encoders: the pieces shared with the Conformer, and the plain Transformer.

A block is a list of pre-norm residual sub-layers, ``x + scale * dropout(f(LayerNorm(x)))``;
the Transformer block is self-attention then a feed-forward network, the Conformer block
(:mod:`ctcasr.models.conformer`) adds a convolution module and a second feed-forward network.

Positions (``pos_enc``): ``rotary`` rotates queries and keys in every attention layer by their
position (RoPE; attention then depends on relative offsets only); ``abs`` adds sinusoids to the
scaled input once (``x * sqrt(d_model) + PE``, "Attention Is All You Need"); ``none`` adds
nothing (a Conformer still sees order through its convolutions; a Transformer does not).
``rotary`` is the default (``benchmarks/posenc.py`` compares them; docs/experiments.md).

Padding never reaches a real frame:

- the encoder zeroes padded input frames (so whatever the batch held there, even inf or NaN,
  cannot turn into NaN inside ``attention @ values``) and padded output frames;
- attention masks padded *keys* (``make_attn_mask``); padded queries compute garbage that no
  real frame reads;
- LayerNorm and the feed-forward networks work frame by frame;
- the Conformer's convolution module zeroes padded frames right before its depthwise
  convolution, the only place where neighbouring frames are mixed (see there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ctcasr.config import TransformerConfig
from ctcasr.errors import CtcasrError
from ctcasr.models.dropout import Dropout
from ctcasr.models.mask import make_attn_mask, make_chunk_mask, make_pad_mask

if TYPE_CHECKING:
    from ctcasr.models.ctc import LayerHook

def _angles(length: int, dim: int, device: torch.device, start: int = 0) -> torch.Tensor:
    """[length, dim // 2]: position t (from ``start``) times the frequencies 10000 ** (-2i /
    dim)."""
    freqs = 10000.0 ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    t = torch.arange(start, start + length, device=device, dtype=torch.float32)
    return t.unsqueeze(1) * freqs


def sinusoidal(length: int, dim: int, device: torch.device, start: int = 0) -> torch.Tensor:
    """[length, dim] absolute position encoding of positions ``start ..``: sines in the first
    half, cosines in the second."""
    a = _angles(length, dim, device, start)
    return torch.cat([a.sin(), a.cos()], dim=-1)


def rotary(length: int, head_dim: int, device: torch.device,
           start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each [length, head_dim], for :func:`apply_rotary` at positions ``start ..``."""
    a = _angles(length, head_dim, device, start).repeat(1, 2)
    return a.cos(), a.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs (i, i + head_dim/2) of x [..., T, head_dim] by their angles."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


# --------------------------------------------------------------------------- sub-layers
class Context(NamedTuple):
    """What every sub-layer of one forward pass may need besides its input."""

    pad: torch.Tensor  # [B, T] bool, True at padding (make_pad_mask)
    attn_mask: torch.Tensor | None  # [B, 1, 1 or T, T] bool, True where a query may attend
    #                                 (real keys, in its chunks); None: all of them
    rope: tuple[torch.Tensor, torch.Tensor] | None  # (cos, sin) [T, head_dim] with rotary
    # streaming (AttentionEncoder.stream_step): what each sub-layer keeps from earlier chunks,
    # by module; "keep" = the attention frames to keep (-1: all)
    cache: dict | None = None


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``scaled_dot_product_attention``. [B,T,D] -> [B,T,D]."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.attention_dropout

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv  # each [B, H, T, head_dim]
        if ctx.rope is not None:
            q, k = apply_rotary(qkv[:2], *ctx.rope)  # queries and keys in one go
        if ctx.cache is not None:  # streaming: the keys and values of the chunks to the left
            if self in ctx.cache:
                k = torch.cat([ctx.cache[self][0], k], dim=2)
                v = torch.cat([ctx.cache[self][1], v], dim=2)
            keep = ctx.cache["keep"]
            cut = 0 if keep < 0 else max(0, k.shape[2] - keep)
            ctx.cache[self] = (k[:, :, cut:], v[:, :, cut:])
        y = attention(q, k, v, ctx.attn_mask, self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              dropout: float) -> torch.Tensor:
    """``scaled_dot_product_attention``, in fp32 on the CPU whatever the autocast or input dtype.

    torch 2.14's CPU flash-attention kernel gave NaN in real frames for bf16 inputs on an Intel
    Xeon with AMX (every attention encoder under CPU bf16 autocast; never on AVX2 CPUs nor on an
    AMD Zen 4, which has AVX-512 bf16 but no AMX, hence the kernel's packed AMX path). Attention
    is a small share of the work here, so the CPU never runs it in reduced precision; the GPU
    keeps the autocast dtype.
    """
    low = torch.is_autocast_enabled("cpu") or torch.float32 != q.dtype or torch.float32 != v.dtype
    if q.device.type == "cpu" and low:  # (q and k are fp32 after rotary, v keeps the model's)
        with torch.autocast("cpu", enabled=False):
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                               dropout_p=dropout)
        return y.to(v.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


class FeedForward(nn.Module):
    """Linear -> Swish -> dropout -> Linear, frame by frame. [B,T,D] -> [B,T,D]."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ffn_dim), nn.SiLU(), Dropout(cfg.dropout),
            nn.Linear(cfg.ffn_dim, cfg.d_model),
        )

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        return self.net(x)


class Residual(nn.Module):
    """Pre-norm residual: ``x + scale * dropout(fn(LayerNorm(x), ctx))``."""

    def __init__(self, cfg: TransformerConfig, fn: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.fn = fn
        self.scale = scale
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        return x + self.scale * self.dropout(self.fn(self.norm(x), ctx))


class Block(nn.Module):
    """Named residual sub-layers applied in order, then ``norm`` (none by default)."""

    def __init__(self, subs: dict[str, Residual], norm: nn.Module | None = None) -> None:
        super().__init__()
        self.subs = nn.ModuleDict(subs)
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        for sub in self.subs.values():
            x = sub(x, ctx)
        return self.norm(x)


def transformer_block(cfg: TransformerConfig) -> Block:
    return Block({
        "attn": Residual(cfg, SelfAttention(cfg)),
        "ffn": Residual(cfg, FeedForward(cfg)),
    })


# --------------------------------------------------------------------------- encoder
class AttentionEncoder(nn.Module):
    """``forward(x [B,T,input_dim], x_lens [B]) -> (y [B,T,d_model], x_lens)``; padding is 0.

    ``make_block(cfg)`` builds one layer; ``final_norm`` adds a LayerNorm after the last one
    (a pre-norm stack needs it unless its blocks end in one, as the Conformer's do).
    """

    def __init__(
        self, input_dim: int, cfg: TransformerConfig,
        make_block: Callable[..., Block], final_norm: bool,
    ) -> None:
        super().__init__()
        d = cfg.d_model
        self.proj = nn.Linear(input_dim, d) if input_dim != d else nn.Identity()
        self.pos_enc = cfg.pos_enc
        self.head_dim = d // cfg.num_heads
        self.dropout = Dropout(cfg.dropout)
        self.layers = nn.ModuleList(make_block(cfg) for _ in range(cfg.num_layers))
        self.chunking = (cfg.chunk_size, cfg.left_chunks)  # outside training (set_chunking)
        self.dynamic_chunk = cfg.dynamic_chunk
        self.norm = nn.LayerNorm(d) if final_norm else nn.Identity()
        self.output_dim = d
        self.xscale = math.sqrt(d)  # abs: x * xscale + PE (benchmarks/posenc.py also tries 1)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def set_chunking(self, chunk_size: int, left_chunks: int = -1) -> None:
        """Decode with chunked attention (0: the whole utterance): a model trained with
        ``dynamic_chunk`` takes any chunk size."""
        self.chunking = (chunk_size, left_chunks)

    def _chunk(self) -> tuple[int, int]:
        """This forward pass's (chunk size, left chunks); 0 = full context."""
        if self.training and self.dynamic_chunk:
            if bool(torch.randint(0, 2, ()).item()):
                return 0, -1
            return int(torch.randint(1, 26, ()).item()), self.chunking[1]
        return self.chunking

    @property
    def streams(self) -> bool:
        """Whether :meth:`stream_step` can run it: chunked attention (``chunk_size`` or
        :meth:`set_chunking`) and, in a Conformer, a causal convolution."""
        return self.chunking[0] > 0 and all(getattr(m, "right", 0) == 0 for m in self.modules())

    def stream_step(self, x: torch.Tensor, state: dict | None, hook: LayerHook | None = None,
                    final: bool = False) -> tuple[torch.Tensor, dict]:
        """The next frames ``x [1, T, D]`` of a stream -> (the outputs of every whole chunk now
        complete, or of all frames if ``final``; the state after them). Each chunk runs as in
        the full-utterance forward with the chunk mask: its own frames, the attention keys and
        values of ``left_chunks`` chunks before it, the convolution's ``kernel - 1`` frames."""
        if not self.streams:
            raise CtcasrError("this encoder does not stream: it needs chunk_size > 0 (or "
                              "set_chunking) and, in a Conformer, causal: true")
        chunk, left = self.chunking
        if state is None:
            state = {"pending": x[:, :0], "offset": 0, "cache": {"keep": left * chunk}}
        pending = torch.cat([state["pending"], x], dim=1)
        n = pending.shape[1] if final else pending.shape[1] // chunk * chunk
        outs = []
        for start in range(0, n, chunk):
            piece = pending[:, start : min(start + chunk, n)]
            outs.append(self._chunk_step(piece, state, hook))
        state["pending"] = pending[:, n:]
        return (torch.cat(outs, dim=1) if outs else x.new_zeros(1, 0, self.output_dim)), state

    def _chunk_step(self, x: torch.Tensor, state: dict, hook: LayerHook | None) -> torch.Tensor:
        t, offset = x.shape[1], state["offset"]
        x = self.proj(x)
        if self.pos_enc == "abs":
            x = x * self.xscale + sinusoidal(t, self.output_dim, x.device, offset)
        rope = rotary(t, self.head_dim, x.device, offset) if self.pos_enc == "rotary" else None
        ctx = Context(pad=torch.zeros(1, t, dtype=torch.bool, device=x.device), attn_mask=None,
                      rope=rope, cache=state["cache"])
        for n, layer in enumerate(self.layers, start=1):
            x = layer(x, ctx)
            if hook is not None:
                x = hook(n, x)
        state["offset"] = offset + t
        return self.norm(x)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor,
                hook: LayerHook | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``hook(n, y)`` after layer n (from 1) may replace its output (intermediate CTC); it
        gets the layer's output before the final LayerNorm (``self.norm``)."""
        t = x.shape[1]
        pad = make_pad_mask(x_lens, t)
        x = self.proj(x.masked_fill(pad.unsqueeze(-1), 0.0))
        if self.pos_enc == "abs":
            x = x * self.xscale + sinusoidal(t, self.output_dim, x.device)
        chunk, left = self._chunk()
        attn_mask = None  # (under export: always the mask, whatever the example's padding)
        if chunk or torch.compiler.is_exporting() or bool(pad.any()):
            attn_mask = make_attn_mask(x_lens, t)
        if chunk:  # a query always sees itself, so that no row is all masked (NaN), not even
            # a padded query's whose chunks hold only padding
            attn_mask = (attn_mask & make_chunk_mask(t, chunk, left, x.device)) | \
                torch.eye(t, dtype=torch.bool, device=x.device)
        ctx = Context(pad=pad, attn_mask=attn_mask,
                      rope=rotary(t, self.head_dim, x.device) if self.pos_enc == "rotary"
                      else None)
        x = self.dropout(x)
        for n, layer in enumerate(self.layers, start=1):
            x = layer(x, ctx)
            if hook is not None:
                x = hook(n, x)
        return self.norm(x).masked_fill(pad.unsqueeze(-1), 0.0), x_lens


class TransformerEncoder(AttentionEncoder):
    """Pre-norm Transformer: (self-attention, feed-forward) x num_layers, final LayerNorm."""

    def __init__(self, input_dim: int, cfg: TransformerConfig) -> None:
        super().__init__(input_dim, cfg, transformer_block, final_norm=True)
