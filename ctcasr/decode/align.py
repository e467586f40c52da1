"""CTC forced alignment of a given transcript: where each word and each unit (character, piece
or phone) is in the audio (``ctcasr align``).

:func:`viterbi` finds the best CTC path that spells the transcript's tokens: over the tokens
with a blank before, between and after them (``2U + 1`` states), each frame stays in its state,
moves to the next, or skips the blank between two different tokens. It keeps one column of
scores at a time and, every ``checkpoint`` frames, a copy of it; the way back is recomputed one
stretch of frames at a time from those copies, so memory grows with ``T / checkpoint + checkpoint``
columns, not ``T x states``: an hour of audio with its whole transcript aligns in one pass.

:func:`align` turns the path into spans: a unit's frames are those the path spends on its
state; a word spans its units; scores are mean frame posteriors (``exp`` of the log-probs on
the path), as for the word times of decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ctcasr.errors import CtcasrError
from ctcasr.models.ctc import min_ctc_frames
from ctcasr.tokenizer import BLANK_ID, SPACE, Tokenizer

NEG_INF = float("-inf")


@dataclass
class Span:
    unit: str
    start: float  # seconds
    end: float
    score: float  # mean frame posterior on the path


@dataclass
class AlignedWord(Span):
    units: list[Span] = field(default_factory=list)


def viterbi(log_probs: torch.Tensor, tokens: list[int], checkpoint: int = 1000
            ) -> torch.Tensor:
    """The best CTC path of ``log_probs [T, V]`` through ``tokens``: for each frame, the index
    of the token it is on (-1: a blank). Raises CtcasrError when ``T`` frames cannot carry the
    tokens."""
    t_len = log_probs.shape[0]
    ids = torch.tensor(tokens, dtype=torch.int64)
    need = int(min_ctc_frames(ids[None], torch.tensor([len(ids)]))) if len(ids) else 0
    if need > t_len:
        raise CtcasrError(f"{t_len} output frames cannot carry {len(ids)} units (CTC needs "
                          f"{need}: too little audio for the text)")
    labels = torch.full((2 * len(ids) + 1,), BLANK_ID, dtype=torch.int64)
    labels[1::2] = ids
    skip = torch.zeros(len(labels), dtype=torch.bool)  # s - 2 -> s allowed
    skip[3::2] = ids[1:] != ids[:-1]
    lp = log_probs.float()
    alpha = torch.full((len(labels),), NEG_INF)
    alpha[0] = lp[0, BLANK_ID]
    if len(ids):
        alpha[1] = lp[0, ids[0]]
    saved = {0: alpha.clone()}  # the column of every checkpoint-th frame
    for t in range(1, t_len):
        alpha, _ = _advance(alpha, lp[t, labels], skip)
        if t % checkpoint == 0:
            saved[t] = alpha.clone()
    last = len(labels) - 1
    state = last if len(ids) == 0 or alpha[last] >= alpha[last - 1] else last - 1
    path = torch.empty(t_len, dtype=torch.int64)
    end = t_len - 1  # the state at frame ``end`` is known; back to the checkpoint before it
    for start in sorted(saved, reverse=True):
        alpha, back = saved[start], []
        for t in range(start + 1, end + 1):
            alpha, choice = _advance(alpha, lp[t, labels], skip)
            back.append(choice)
        for t in range(end, start, -1):
            path[t] = state
            state -= int(back[t - start - 1][state])
        path[start] = state
        end = start
    return torch.where(path % 2 == 1, (path - 1) // 2, -1)


def _advance(alpha: torch.Tensor, emit: torch.Tensor, skip: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame: the new column and, per state, how many states back its best came from."""
    stay = alpha
    step = torch.cat([alpha.new_full((1,), NEG_INF), alpha[:-1]])
    jump = torch.cat([alpha.new_full((2,), NEG_INF), alpha[:-2]])
    jump = torch.where(skip, jump, NEG_INF)
    best, choice = torch.stack([stay, step, jump]).max(0)
    return best + emit, choice.to(torch.uint8)


def align(log_probs: torch.Tensor, words: list[str], tokenizer: Tokenizer, frame_s: float,
          checkpoint: int = 1000) -> list[AlignedWord]:
    """Words and their units in time. ``words``: the transcript as the tokenizer spells it
    (raises CtcasrError naming a word it cannot spell)."""
    per_word = []
    for w in words:
        try:
            per_word.append(tokenizer.encode(w))
        except (ValueError, KeyError) as e:
            raise CtcasrError(f"the model cannot spell the word {w!r} ({e})") from None
    tokens = [t for ids in per_word for t in ids]
    on = viterbi(log_probs, tokens, checkpoint)
    post = log_probs.float().exp()
    frames: list[list[int]] = [[] for _ in tokens]
    for t, k in enumerate(on.tolist()):
        if k >= 0:
            frames[k].append(t)
    out, k = [], 0
    for w, ids in zip(words, per_word, strict=True):
        units = []
        for tok in ids:
            f = frames[k]
            piece = tokenizer.id_to_piece(tok).removeprefix(SPACE)
            score = float(post[f, tok].mean())
            units.append(Span(piece, f[0] * frame_s, (f[-1] + 1) * frame_s, score))
            k += 1
        spoken = [u for u in units if u.unit] or units  # (a bare word boundary is no sound)
        out.append(AlignedWord(w, spoken[0].start, spoken[-1].end,
                               sum(u.score for u in spoken) / len(spoken), spoken))
    return out
