"""CTC loss and the feasibility check that goes with it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctcasr.tokenizer import BLANK_ID


def ctc_loss(
    log_probs: torch.Tensor, out_lens: torch.Tensor, tokens: torch.Tensor, token_lens: torch.Tensor
) -> torch.Tensor:
    """Per-utterance CTC negative log-likelihood, [B]. Infeasible utterances give 0 (not inf)."""
    return F.ctc_loss(
        log_probs.transpose(0, 1),
        tokens,
        out_lens,
        token_lens,
        blank=BLANK_ID,
        reduction="none",
        zero_infinity=True,
    )


def min_ctc_frames(tokens: torch.Tensor, token_lens: torch.Tensor) -> torch.Tensor:
    """Fewest frames that can carry each label sequence: its length plus one blank between
    every pair of equal neighbours. [B, U], [B] -> [B]."""
    if tokens.shape[1] < 2:
        return token_lens.clone()
    pos = torch.arange(1, tokens.shape[1], device=tokens.device)
    repeats = (tokens[:, 1:] == tokens[:, :-1]) & (pos.unsqueeze(0) < token_lens.unsqueeze(1))
    return token_lens + repeats.sum(1)
