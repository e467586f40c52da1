"""Structured pruning: whole units removed from a trained model, leaving a smaller dense model
of the same kind (real speed, no masks), which ``ctcasr train --init`` then fine-tunes.

What is removed (``sparsity``: the share of each group's units that goes):

- **LSTM / GRU**: hidden units, the same number in every layer and direction, so that the
  config's ``hidden_size`` is the new size. A unit is its rows in the input and recurrent
  weights and biases (one per gate), its column in the recurrent weights, and the column that
  reads it in the next layer's input weights (both directions) or in the CTC output layer.
- **Conformer / Transformer**: feed-forward channels (a row of the first linear layer, a
  column of the second), the same number in every feed-forward network (``ffn_dim``). The
  model width, the attention heads and the Conformer's convolution channels stay: the heads'
  width is ``d_model / num_heads`` and the convolution module normalises over its channels,
  so neither comes apart into independent units.

A unit's importance is its weight norm: the sum of squares of every weight that feeds it and
every weight that reads it (Han et al., 2015; Li et al., 2017, "Pruning Filters for Efficient
ConvNets"), computed from the checkpoint alone. The CTC output layer is shared by the last
layer and the intermediate CTC layers (and self-conditioning feeds those layers' outputs
back), so their units are chosen together, by the sum of their scores. Pruning a unit that
nothing reads (its outgoing weights zero) leaves the model's outputs as they were; sparsity 0
is the identity (both tested).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ctcasr.config import ModelConfig
from ctcasr.errors import CtcasrError

Tensor = torch.Tensor
GATES = {"lstm": 4, "gru": 3}
_FFN = re.compile(r"^(encoder\.layers\.\d+\.subs\.\w+\.fn\.net\.)0\.weight$")


@dataclass
class Pruned:
    """A pruned model's weights, what its config changes to, and which units it kept."""

    state: dict[str, Tensor]
    encoder_conf: dict[str, int]  # encoder_conf fields and their new values
    kept: dict[str, Tensor]  # group name (e.g. "layer 1 forward", a ffn prefix) -> indices


def kept_count(n: int, sparsity: float) -> int:
    if not 0.0 <= sparsity < 1.0:
        raise CtcasrError(f"prune: sparsity must be in [0, 1), got {sparsity:g}")
    return max(1, n - round(n * sparsity))


def prune(state: dict[str, Tensor], cfg: ModelConfig, sparsity: float) -> Pruned:
    """The weights of ``state`` (a model of config ``cfg``) with ``sparsity`` of each group's
    least important units removed (module doc)."""
    kept_count(1, sparsity)  # (checks the range)
    if cfg.encoder in GATES:
        return _prune_rnn(state, cfg, sparsity)
    if cfg.encoder in ("conformer", "transformer", "ebranchformer"):
        return _prune_ffn(state, sparsity)
    raise CtcasrError(f"prune: cannot prune a {cfg.encoder} encoder (lstm, gru, conformer, "
                      "transformer or ebranchformer can)")


def _sq(t: Tensor, dim: int) -> Tensor:
    """Sum of squares over every axis but ``dim``."""
    t = t.detach().double().movedim(dim, 0)
    return t.reshape(t.shape[0], -1).pow(2).sum(1)


def _topk(score: Tensor, k: int) -> Tensor:
    """The ``k`` highest-scoring indices, ascending (ties: the lower index)."""
    return torch.sort(-score, stable=True).indices[:k].sort().values


def _prune_rnn(state: dict[str, Tensor], cfg: ModelConfig, sparsity: float) -> Pruned:
    conf = cfg.encoder_conf
    g, hidden, layers = GATES[cfg.encoder], conf.hidden_size, conf.num_layers
    dirs = 2 if conf.bidirectional else 1
    k = kept_count(hidden, sparsity)

    def name(i: int, d: int, what: str) -> str:
        if conf.impl == "packed":
            return f"encoder.rnn.{what}_l{i}{'_reverse' if d else ''}"
        return f"encoder.{('forward', 'backward')[d]}_layers.{i}.{what}_l0"

    def rows(units: Tensor) -> Tensor:  # a unit's row in every gate
        return torch.cat([gate * hidden + units for gate in range(g)])

    def readers(i: int) -> list[tuple[str, int]]:  # (weight, axis) reading layer i's output
        if i + 1 < layers:
            return [(name(i + 1, d, "weight_ih"), 1) for d in range(dirs)]
        return [("head.weight", 1)]

    def score(i: int, d: int) -> Tensor:
        s = torch.zeros(hidden, dtype=torch.float64)
        for what in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            s += _sq(state[name(i, d, what)], 0).reshape(g, hidden).sum(0)
        s += _sq(state[name(i, d, "weight_hh")], 1)
        for w, axis in readers(i):
            s += _sq(state[w], axis)[d * hidden : (d + 1) * hidden]
        return s

    shared = {n - 1 for n in cfg.inter_ctc_layers} | {layers - 1}  # read by the CTC head
    keep: dict[tuple[int, int], Tensor] = {}
    for d in range(dirs):
        together = sum(score(i, d) for i in shared)
        for i in range(layers):
            keep[i, d] = _topk(together if i in shared else score(i, d), k)

    def columns(i: int) -> Tensor:  # layer i's kept outputs, both directions
        return torch.cat([d * hidden + keep[i, d] for d in range(dirs)])

    new = dict(state)
    for (i, d), units in keep.items():
        for what in ("weight_ih", "bias_ih", "bias_hh"):
            new[name(i, d, what)] = state[name(i, d, what)][rows(units)]
        new[name(i, d, "weight_hh")] = state[name(i, d, "weight_hh")][rows(units)][:, units]
        if i > 0:
            new[name(i, d, "weight_ih")] = new[name(i, d, "weight_ih")][:, columns(i - 1)]
    last = columns(layers - 1)
    new["head.weight"] = state["head.weight"][:, last]
    if "condition.weight" in state:  # self-conditioning: added to the shared layers' outputs
        new["condition.weight"] = state["condition.weight"][last]
        new["condition.bias"] = state["condition.bias"][last]
    kept = {f"layer {i + 1} {('forward', 'backward')[d]}": u for (i, d), u in keep.items()}
    return Pruned({n: t.contiguous() for n, t in new.items()}, {"hidden_size": k}, kept)


def _prune_ffn(state: dict[str, Tensor], sparsity: float) -> Pruned:
    prefixes = [m.group(1) for n in state if (m := _FFN.match(n))]
    if not prefixes:
        raise CtcasrError("prune: this model has no feed-forward networks to prune")
    width = state[prefixes[0] + "0.weight"].shape[0]
    k = kept_count(width, sparsity)
    new, kept = dict(state), {}
    for p in prefixes:
        w1, b1, w2 = state[p + "0.weight"], state[p + "0.bias"], state[p + "3.weight"]
        units = _topk(_sq(w1, 0) + b1.detach().double().pow(2) + _sq(w2, 1), k)
        new[p + "0.weight"], new[p + "0.bias"] = w1[units].contiguous(), b1[units].contiguous()
        new[p + "3.weight"] = w2[:, units].contiguous()
        kept[p.removesuffix(".fn.net.")] = units
    return Pruned(new, {"ffn_dim": k}, kept)
