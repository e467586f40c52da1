"""The CTC model: global CMVN -> front end (subsampling) -> encoder -> linear -> log-softmax."""

from __future__ import annotations

import torch
from torch import nn


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
                 vocab_size: int, dropout: float):
        super().__init__()
        self.cmvn = cmvn
        self.frontend = frontend
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.output_dim, vocab_size)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for input frames (only the front end changes lengths)."""
        return self.frontend.output_lengths(lengths)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, x_lens = self.frontend(self.cmvn(x), x_lens)
        h, h_lens = self.encoder(x, x_lens)
        logits = self.head(self.dropout(h))
        return logits.float().log_softmax(dim=-1), h_lens
