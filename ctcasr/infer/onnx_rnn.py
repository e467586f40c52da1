"""LSTM and GRU layers that export as ONNX's own ``LSTM`` / ``GRU`` operators.

``torch.export`` (under the dynamo ONNX exporter) traces ``nn.LSTM`` as a while-loop that takes
minutes of symbolic-shape work to export (221 s for a 2-layer test model), and unrolls ``nn.GRU``
over time, which fixes the input length. Here each unidirectional layer becomes one call of a
custom operator (``ctcasr::lstm`` / ``ctcasr::gru``), which ``torch.export`` keeps as one opaque
node, and :data:`TRANSLATIONS` writes that node as one ONNX ``LSTM`` / ``GRU`` node (what
onnxruntime runs with its fused kernels, and what ``quantize_dynamic`` turns into int8).

The weights are stored in ONNX's gate order (LSTM ``i o f c``, GRU ``z r h``; PyTorch's are
``i f g o`` and ``r z n``) so they enter the ONNX graph as initializers, as int8 quantisation
needs; the eager implementation puts them back in PyTorch's order and calls ``torch.lstm`` /
``torch.gru``, so the wrapped model computes what the original did. PyTorch's GRU applies the
reset gate after the recurrent matrix product: ONNX's ``linear_before_reset=1``.
"""

from __future__ import annotations

import torch
from torch import nn

GATES = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}  # ONNX gate k = PyTorch gate GATES[kind][k]


def _to_onnx(w: torch.Tensor, kind: str) -> torch.Tensor:
    chunks = w.chunk(len(GATES[kind]), 0)
    return torch.cat([chunks[k] for k in GATES[kind]], 0)


def _to_torch(w: torch.Tensor, kind: str) -> torch.Tensor:
    order = GATES[kind]
    chunks = w.chunk(len(order), 0)
    return torch.cat([chunks[order.index(k)] for k in range(len(order))], 0)


def _eager(kind: str, x: torch.Tensor, w: torch.Tensor, r: torch.Tensor,
           b: torch.Tensor) -> torch.Tensor:
    hidden = r.shape[-1]
    gates = len(GATES[kind]) * hidden
    params = [_to_torch(t, kind) for t in (w[0], r[0], b[0, :gates], b[0, gates:])]
    h0 = x.new_zeros(1, x.shape[1], hidden)
    if kind == "lstm":
        return torch.lstm(x, (h0, h0), params, True, 1, 0.0, False, False, False)[0]
    return torch.gru(x, h0, params, True, 1, 0.0, False, False, False)[0]


@torch.library.custom_op("ctcasr::lstm", mutates_args=())
def lstm(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor,
         hidden_size: int) -> torch.Tensor:
    """One unidirectional LSTM layer, ``x [T, B, D] -> y [T, B, H]``, zero initial state;
    ``w [1, 4H, D]``, ``r [1, 4H, H]``, ``b [1, 8H]`` as ONNX's ``LSTM`` takes them."""
    return _eager("lstm", x, w, r, b)


@torch.library.custom_op("ctcasr::gru", mutates_args=())
def gru(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor,
        hidden_size: int) -> torch.Tensor:
    """:func:`lstm` for a GRU layer (``3H`` for ``4H``)."""
    return _eager("gru", x, w, r, b)


@lstm.register_fake
def _(x, w, r, b, hidden_size):
    return x.new_empty(x.shape[0], x.shape[1], hidden_size)


@gru.register_fake
def _(x, w, r, b, hidden_size):
    return x.new_empty(x.shape[0], x.shape[1], hidden_size)


class OnnxRNN(nn.Module):
    """Stands in for a one-layer, unidirectional, batch-first ``nn.LSTM`` / ``nn.GRU`` with
    biases: ``forward(x [B, T, D]) -> (y [B, T, H], None)``, the same values."""

    def __init__(self, rnn: nn.LSTM | nn.GRU) -> None:
        super().__init__()
        if rnn.num_layers != 1 or rnn.bidirectional or not rnn.batch_first or not rnn.bias:
            raise ValueError("OnnxRNN: one layer, one direction, batch first, with biases")
        self.kind = "lstm" if isinstance(rnn, nn.LSTM) else "gru"
        self.hidden_size = rnn.hidden_size
        with torch.no_grad():
            w, r = (_to_onnx(t, self.kind) for t in (rnn.weight_ih_l0, rnn.weight_hh_l0))
            b = torch.cat([_to_onnx(rnn.bias_ih_l0, self.kind),
                           _to_onnx(rnn.bias_hh_l0, self.kind)])
        self.register_buffer("w", w[None].clone())
        self.register_buffer("r", r[None].clone())
        self.register_buffer("b", b[None].clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        op = lstm if self.kind == "lstm" else gru
        return op(x.transpose(0, 1), self.w, self.r, self.b, self.hidden_size).transpose(0, 1), \
            None


def translations() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export`` (needs onnxscript)."""
    from onnxscript import opset18 as op

    def onnx_lstm(x, w, r, b, hidden_size: int):
        y, _, _ = op.LSTM(x, w, r, b, hidden_size=hidden_size)
        return op.Squeeze(y, op.Constant(value_ints=[1]))  # [T, 1, B, H]: one direction

    def onnx_gru(x, w, r, b, hidden_size: int):
        y, _ = op.GRU(x, w, r, b, hidden_size=hidden_size, linear_before_reset=1)
        return op.Squeeze(y, op.Constant(value_ints=[1]))

    return {torch.ops.ctcasr.lstm.default: onnx_lstm, torch.ops.ctcasr.gru.default: onnx_gru}
