"""Bidirectional LSTM / GRU encoders in which padding never enters the recurrence.

Two implementations, equal in value (tested), chosen by ``impl``:

- ``"reverse"`` (default): each direction is a unidirectional RNN run over the padded batch;
  the backward direction runs over each utterance reversed *within its own length*
  (``reverse_padded``), so in both directions the real frames come first and the padding
  after them, where it cannot influence any real output. This uses the fused dense kernel.
- ``"packed"``: ``torch.nn.utils.rnn.pack_padded_sequence`` with a bidirectional RNN.
  On CPU its backward pass is much slower than the dense kernel (docs/design.md), so it is
  kept for reference and for GPUs, where cuDNN runs packed sequences natively.

Padded output frames are zero in both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ctcasr.config import RNNConfig
from ctcasr.errors import CtcasrError
from ctcasr.models.dropout import Dropout
from ctcasr.models.mask import make_pad_mask

if TYPE_CHECKING:
    from ctcasr.models.ctc import LayerHook


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse ``x[b, :lengths[b]]`` in time for every b; padding stays where it is. [B,T,D]."""
    t = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    src = lengths.to(x.device).unsqueeze(1) - 1 - t
    src = torch.where(src >= 0, src, t)
    # expand over the feature axis only: expand_as(x) ties the time axis to x's, which an
    # ONNX export then fixes to the example's length
    return x.gather(1, src.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class RNNEncoder(nn.Module):
    """``forward(x [B,T,D], x_lens [B]) -> (y [B,T,H], y_lens [B])``; padded outputs are 0."""

    def __init__(self, rnn_type: str, input_dim: int, cfg: RNNConfig) -> None:
        super().__init__()
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[rnn_type]
        self.impl = cfg.impl
        self.bidirectional = cfg.bidirectional
        dirs = 2 if cfg.bidirectional else 1
        self.output_dim = cfg.hidden_size * dirs
        if cfg.impl == "packed":
            self.rnn = rnn_cls(
                input_dim, cfg.hidden_size, num_layers=cfg.num_layers,
                dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
                bidirectional=cfg.bidirectional, batch_first=True,
            )
            return
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for i in range(cfg.num_layers):
            d_in = input_dim if i == 0 else self.output_dim
            self.forward_layers.append(rnn_cls(d_in, cfg.hidden_size, batch_first=True))
            if cfg.bidirectional:
                self.backward_layers.append(rnn_cls(d_in, cfg.hidden_size, batch_first=True))
        self.dropout = Dropout(cfg.dropout)

    @property
    def streams(self) -> bool:
        """Whether :meth:`stream_step` can run it: one direction, layer by layer."""
        return not self.bidirectional and self.impl == "reverse"

    def stream_step(self, x: torch.Tensor, state: list | None, hook: LayerHook | None = None,
                    final: bool = False) -> tuple[torch.Tensor, list]:
        """The next frames ``x [1, T, D]`` of a stream, from each layer's ``state`` (None at
        the start) -> (``y [1, T, H]``, the states after them); a one-direction encoder only
        (every frame is output at once: ``final`` changes nothing)."""
        if not self.streams:
            raise CtcasrError("only a one-direction (bidirectional: false) reverse-impl RNN "
                              "streams")
        if x.shape[1] == 0:  # nothing new (the flush at the end)
            return x.new_zeros(1, 0, self.output_dim), state or []
        new = []
        for i, layer in enumerate(self.forward_layers):
            x, s = layer(x, None if state is None else state[i])
            new.append(s)
            if hook is not None:
                x = hook(i + 1, x)
        return x, new

    @property
    def num_layers(self) -> int:
        return self.rnn.num_layers if self.impl == "packed" else len(self.forward_layers)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor,
                hook: LayerHook | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``hook(n, y)`` after layer n (from 1) may replace its output (intermediate CTC)."""
        if self.impl == "packed":
            if hook is not None:
                raise CtcasrError("intermediate CTC needs each layer's output: "
                                  "model.encoder_conf.impl: reverse, not packed")
            packed = pack_padded_sequence(x, x_lens.cpu(), batch_first=True, enforce_sorted=False)
            y, _ = self.rnn(packed)
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
            return y, x_lens
        keep = ~make_pad_mask(x_lens, x.shape[1]).unsqueeze(-1)
        for i, fwd in enumerate(self.forward_layers):
            if i > 0:
                x = self.dropout(x)
            y, _ = fwd(x)
            if self.bidirectional:
                yb, _ = self.backward_layers[i](reverse_padded(x, x_lens))
                y = torch.cat([y, reverse_padded(yb, x_lens)], dim=-1)
            x = y * keep
            if hook is not None:
                x = hook(i + 1, x)
        return x, x_lens
