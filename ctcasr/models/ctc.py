"""The CTC model: global CMVN -> front end (subsampling) -> encoder -> linear -> log-softmax.

Three ways to run it, all here:

- ``model(feats, feat_lens)`` -> ``(log_probs, out_lens)``: decoding and exports;
- ``model(feats, feat_lens, tokens, token_lens, inter_weight)`` -> :class:`CTCOutput` with the
  per-utterance loss: training (through DDP's wrapper, so gradients are synchronised);
- ``model.stream_step(new_feats, state, final)`` -> ``(log_probs, state)``: streaming, the
  state explicit (:class:`StreamState`).

Intermediate CTC (Lee & Watanabe, 2021): with ``inter_layers`` the outputs of those encoder
layers also go through the CTC head (the same ``head``: no new output layer), and the loss is
``(1 - inter_weight) CTC(last layer) + inter_weight mean(CTC(those layers))``; they are computed
only for a loss, so decoding and exports cost what they did. Self-conditioned CTC (Nozaki &
Komatsu, 2021; ``condition``): each intermediate prediction is also fed back, ``x +
Linear(softmax)``, to the layers above, in training and decoding alike (so exports carry it).
Consistency-regularised CTC (Yao et al., 2025): given two differently masked copies of each
utterance, the loss is the mean of their losses plus ``cr_weight`` times :func:`consistency`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ctcasr.errors import CtcasrError
from ctcasr.models.dropout import Dropout
from ctcasr.models.mask import make_pad_mask
from ctcasr.tokenizer import BLANK_ID

# hook(n, y) called after encoder layer n (from 1) with its output [B, T, D]; returns the output
# the next layer gets
LayerHook = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class CTCOutput:
    """What the model gives with targets: the loss per utterance (CTC, intermediate layers
    mixed in), the log-probs it came from, and which utterances have fewer output frames than
    their labels need (their loss is 0: ``zero_infinity``)."""

    log_probs: torch.Tensor  # [B, T', V]
    out_lens: torch.Tensor  # [B]
    loss: torch.Tensor  # [B]
    infeasible: torch.Tensor  # [B] bool


@dataclass
class StreamState:
    """A stream's state between :meth:`CTCModel.stream_step` calls."""

    feats: torch.Tensor  # fbank frames [T, F] the front end has not consumed yet
    encoder: Any = None  # the encoder's (RNN states; attention caches)


def ctc_loss(log_probs: torch.Tensor, out_lens: torch.Tensor, tokens: torch.Tensor,
             token_lens: torch.Tensor) -> torch.Tensor:
    """Per-utterance CTC negative log-likelihood, [B]. Infeasible utterances give 0 (not inf)."""
    return F.ctc_loss(log_probs.transpose(0, 1), tokens, out_lens, token_lens, blank=BLANK_ID,
                      reduction="none", zero_infinity=True)


def min_ctc_frames(tokens: torch.Tensor, token_lens: torch.Tensor) -> torch.Tensor:
    """Fewest frames that can carry each label sequence: its length plus one blank between
    every pair of equal neighbours. [B, U], [B] -> [B]."""
    if tokens.shape[1] < 2:
        return token_lens.clone()
    pos = torch.arange(1, tokens.shape[1], device=tokens.device)
    repeats = (tokens[:, 1:] == tokens[:, :-1]) & (pos.unsqueeze(0) < token_lens.unsqueeze(1))
    return token_lens + repeats.sum(1)


def consistency(log_probs: torch.Tensor, out_lens: torch.Tensor) -> torch.Tensor:
    """CR-CTC's term, per utterance: for each of two copies, KL(the other copy's posteriors ||
    its own) summed over its frames, the other copy detached (each is the other's target), then
    the mean of the two. ``log_probs [2B, T, V]`` (rows ``b`` and ``B + b``: the copies of
    utterance ``b``), ``out_lens [2B]`` -> ``[B]``."""
    target = torch.cat(log_probs.detach().chunk(2)[::-1])
    kl = F.kl_div(log_probs, target, reduction="none", log_target=True).sum(-1)  # [2B, T]
    kl = kl.masked_fill(make_pad_mask(out_lens, kl.shape[1]), 0.0).sum(1)
    return kl.view(2, -1).mean(0)


class GlobalCMVN(nn.Module):
    """``(x - mean) / std`` per feature bin: the one place CMVN is applied.

    The statistics are buffers, so they live in the model's state dict (and its checkpoint).
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("istd", 1.0 / std.clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.istd


class CTCModel(nn.Module):
    """``forward(feats [B,T,F], feat_lens [B]) -> (log_probs [B,T',V], out_lens [B])``."""

    def __init__(self, cmvn: GlobalCMVN, frontend: nn.Module, encoder: nn.Module,
                 vocab_size: int, dropout: float, inter_layers: Sequence[int] = (),
                 condition: bool = False):
        super().__init__()
        self.cmvn = cmvn
        self.frontend = frontend
        self.encoder = encoder
        self.dropout = Dropout(dropout)
        self.head = nn.Linear(encoder.output_dim, vocab_size)
        self.inter_layers = tuple(sorted(set(inter_layers)))
        n = getattr(encoder, "num_layers", 0)
        if any(not 1 <= k < n for k in self.inter_layers):
            raise CtcasrError(f"model.inter_ctc_layers: {list(inter_layers)}: each must be a "
                              f"layer below the last (1 to {n - 1} for this {n}-layer encoder)")
        if self.inter_layers and getattr(encoder, "impl", "") == "packed":
            raise CtcasrError("model.inter_ctc_layers needs each layer's output: "
                              "model.encoder_conf.impl: reverse, not packed")
        if condition and not self.inter_layers:
            raise CtcasrError("model.inter_ctc_condition needs model.inter_ctc_layers")
        self.condition = nn.Linear(vocab_size, encoder.output_dim) if condition else None

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for input frames (only the front end changes lengths)."""
        return self.frontend.output_lengths(lengths)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor, tokens: torch.Tensor | None = None,
                token_lens: torch.Tensor | None = None, inter_weight: float = 0.0,
                cr_weight: float = 0.0):
        """``(log_probs [B,T',V], out_lens [B])``; with ``tokens [B,U]`` and ``token_lens``, a
        :class:`CTCOutput` with the loss (intermediate layers weighted by ``inter_weight``).
        ``x`` may hold two copies of each utterance (rows ``b`` and ``B + b``, CR-CTC): the loss
        per utterance is then the copies' mean plus ``cr_weight`` x :func:`consistency`."""
        inter = tokens is not None and bool(self.inter_layers) and inter_weight > 0
        log_probs, h_lens, inter_out = self.outputs(x, x_lens, inter)
        if tokens is None:
            return log_probs, h_lens
        assert token_lens is not None
        n = tokens.shape[0]
        views = x.shape[0] // n if n else 1
        if views * n != x.shape[0] or views > 2:
            raise CtcasrError(f"{x.shape[0]} inputs for {n} transcripts: one or two copies each")
        targets = (tokens.repeat(views, 1), token_lens.repeat(views))
        loss = ctc_loss(log_probs, h_lens, *targets)
        if inter:
            lower = torch.stack([ctc_loss(lp, h_lens, *targets) for lp in inter_out])
            loss = (1 - inter_weight) * loss + inter_weight * lower.mean(0)
        loss = loss.view(views, n).mean(0)
        if views == 2 and cr_weight > 0:
            loss = loss + cr_weight * consistency(log_probs, h_lens)
        infeasible = h_lens[:n] < min_ctc_frames(tokens, token_lens)
        return CTCOutput(log_probs, h_lens, loss, infeasible)

    def outputs(self, x: torch.Tensor, x_lens: torch.Tensor, intermediate: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """``(log_probs [B,T',V], out_lens [B], the intermediate layers' log-probs)``: the last
        list is filled (in layer order) only with ``intermediate``."""
        x, x_lens = self.frontend(self.cmvn(x), x_lens)
        inter_out: list[torch.Tensor] = []
        hook = None
        if self.inter_layers and (intermediate or self.condition is not None):
            keep = ~make_pad_mask(x_lens, x.shape[1]).unsqueeze(-1)
            hook = self._hook(keep, inter_out if intermediate else [])
        h, h_lens = self.encoder(x, x_lens, hook) if hook is not None else self.encoder(x, x_lens)
        return self._log_probs(h), h_lens, inter_out

    def stream_step(self, feats: torch.Tensor, state: StreamState | None = None,
                    final: bool = False) -> tuple[torch.Tensor, StreamState]:
        """The log-probs ``[T', V]`` that the new fbank frames ``feats [T, F]`` complete, and
        the state for the next call: the frames the front end has not consumed yet and the
        encoder's own state. ``final``: no more frames come (the encoder flushes what it
        holds). Fed any split of an utterance's frames, the pieces are the log-probs of the
        whole (a streaming encoder: ``encoder.streams``)."""
        device = self.head.weight.device
        buf = feats.to(device) if state is None else torch.cat([state.feats, feats.to(device)])
        enc = None if state is None else state.encoder
        front = self.frontend
        if buf.shape[0] >= front.min_input_frames:
            x, out_lens = front(self.cmvn(buf)[None], torch.tensor([buf.shape[0]], device=device))
            buf = buf[int(out_lens[0]) * self.stride :]
        elif final and enc is not None:
            x = torch.zeros(1, 0, front.output_dim, device=device)
        else:
            return torch.zeros(0, self.head.out_features, device=device), StreamState(buf, enc)
        hook = self._hook(None, []) if self.condition is not None else None
        h, enc = self.encoder.stream_step(x, enc, hook, final)
        return self._log_probs(h)[0], StreamState(buf, enc)

    @property
    def stride(self) -> int:
        """Input frames per output frame (the front end's convolution strides)."""
        return math.prod(s for _, s in self.frontend.layers) if self.frontend.layers else 1

    def _log_probs(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(h)).float().log_softmax(dim=-1)

    def _hook(self, keep: torch.Tensor | None, out: list[torch.Tensor]) -> LayerHook:
        """The hook computing (and, self-conditioned, feeding back) the intermediate layers'
        CTC outputs into ``out``; ``keep`` [B, T, 1] zeroes padded frames (None: no padding)."""
        norm = getattr(self.encoder, "norm", None)  # the encoder's final norm, if it has one
        norm = norm if norm is not None else nn.Identity()

        def hook(n: int, y: torch.Tensor) -> torch.Tensor:
            if n not in self.inter_layers:
                return y
            log_probs = self._log_probs(norm(y))
            out.append(log_probs)
            if self.condition is None:
                return y
            # padded frames stay 0: the layers above must not see the condition's bias there
            y = y + self.condition(log_probs.exp().to(y.dtype))
            return y * keep if keep is not None else y

        return hook
