"""The CTC model: global CMVN -> front end (subsampling) -> encoder -> linear -> log-softmax.

Intermediate CTC (Lee & Watanabe, 2021): with ``inter_layers`` the outputs of those encoder layers
also go through the CTC head (the same ``head``: no new output layer) and the trainer adds their
CTC losses (``train.inter_ctc_weight``); it asks for them with ``forward(..., inter=True)``, and
nothing of it runs otherwise, so decoding and exports cost what they did. Self-conditioned CTC
(Nozaki & Komatsu, 2021; ``condition``): each intermediate prediction is also fed back, ``x +
Linear(softmax)``, to the layers above, in training and decoding alike (so exports carry it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ctcasr.errors import CtcasrError
from ctcasr.models.mask import make_pad_mask

# hook(n, y) called after encoder layer n (from 1) with its output [B, T, D]; returns the output
# the next layer gets
LayerHook = Callable[[int, torch.Tensor], torch.Tensor]


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
        self.dropout = nn.Dropout(dropout)
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

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor, inter: bool = False):
        """``(log_probs [B,T',V], out_lens [B])``; with ``inter``, also the list of the
        intermediate layers' log-probs (each [B,T',V]), in layer order."""
        x, x_lens = self.frontend(self.cmvn(x), x_lens)
        inter_out: list[torch.Tensor] = []
        hook = None
        if self.inter_layers and (inter or self.condition is not None):
            keep = ~make_pad_mask(x_lens, x.shape[1]).unsqueeze(-1)
            hook = self._hook(keep, inter_out)
        h, h_lens = self.encoder(x, x_lens, hook) if hook is not None else self.encoder(x, x_lens)
        log_probs = self._log_probs(h)
        return (log_probs, h_lens, inter_out) if inter else (log_probs, h_lens)

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
