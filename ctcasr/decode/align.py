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
    index: int = 0  # its place in the transcript


@dataclass(frozen=True)
class Find:
    """Find which words of a long transcript are in the audio (module doc): a transcript word
    may be left out at ``skip_penalty`` (nats, each), and a frame between words may be speech
    that is not in the transcript at ``garbage_penalty`` (nats below its best unit)."""

    skip_penalty: float = 6.0
    garbage_penalty: float = 4.0


GARBAGE = -2  # viterbi's label of a frame of speech that is not in the transcript


def viterbi(log_probs: torch.Tensor, tokens: list[int], checkpoint: int = 1000,
            word_starts: list[int] | None = None, find: Find | None = None) -> torch.Tensor:
    """The best CTC path of ``log_probs [T, V]`` through ``tokens``: for each frame, the index
    of the token it is on (-1: a blank; :data:`GARBAGE`: untranscribed speech, with ``find``).
    ``find`` needs ``word_starts``, the index of each word's first token. Raises CtcasrError
    when ``T`` frames cannot carry the tokens (never with ``find``: words are left out)."""
    t_len = log_probs.shape[0]
    ids = torch.tensor(tokens, dtype=torch.int64)
    need = int(min_ctc_frames(ids[None], torch.tensor([len(ids)]))) if len(ids) else 0
    if need > t_len and find is None:
        raise CtcasrError(f"{t_len} output frames cannot carry {len(ids)} units (CTC needs "
                          f"{need}: too little audio for the text)")
    labels = torch.full((2 * len(ids) + 1,), BLANK_ID, dtype=torch.int64)
    labels[1::2] = ids
    skip = torch.zeros(len(labels), dtype=torch.bool)  # s - 2 -> s allowed
    skip[3::2] = ids[1:] != ids[:-1]
    graph = _Graph(log_probs.float(), labels, skip, word_starts, find)
    alpha = torch.full((len(labels),), NEG_INF)
    alpha[0] = 0.0  # a virtual frame before the first: the path starts in state 0 (finding:
    alpha, _ = graph.advance(alpha, 0)  # or at the blank before a later word)
    saved = {0: alpha.clone()}  # the column of every checkpoint-th frame
    for t in range(1, t_len):
        alpha, _ = graph.advance(alpha, t)
        if t % checkpoint == 0:
            saved[t] = alpha.clone()
    last = len(labels) - 1
    state = last if len(ids) == 0 or alpha[last] >= alpha[last - 1] else last - 1
    path = torch.empty(t_len, dtype=torch.int64)
    end = t_len - 1  # the state at frame ``end`` is known; back to the checkpoint before it
    for start in sorted(saved, reverse=True):
        alpha, back = saved[start], []
        for t in range(start + 1, end + 1):
            alpha, came = graph.advance(alpha, t)
            back.append(came)
        for t in range(end, start, -1):
            path[t] = state
            state = graph.came_from(back[t - start - 1], state)
        path[start] = state
        end = start
    on = torch.where(path % 2 == 1, (path - 1) // 2, -1)
    return torch.where(graph.garbage_on(path), GARBAGE, on) if find else on


class _Graph:
    """The CTC graph of one transcript, one frame at a time; with ``find`` the extra arcs: from
    the blank before a word to the blank before any later word (``skip_penalty`` per word left
    out), and garbage on those blanks (a frame's best unit, less ``garbage_penalty``). What
    :meth:`advance` keeps for the way back is small: per state, 0 / 1 / 2 states back (uint8;
    3: a skip), and per word bound the bound a skip came from."""

    def __init__(self, lp: torch.Tensor, labels: torch.Tensor, skip: torch.Tensor,
                 word_starts: list[int] | None, find: Find | None) -> None:
        self.lp, self.labels, self.skip, self.find = lp, labels, skip, find
        if find is not None:
            if word_starts is None:
                raise ValueError("find needs word_starts")
            self.bounds = torch.tensor([2 * k for k in word_starts] + [len(labels) - 1])
            self.cost = find.skip_penalty * torch.arange(len(self.bounds), dtype=torch.float32)
            self.bound_of = {int(b): i for i, b in enumerate(self.bounds)}

    def advance(self, alpha: torch.Tensor, t: int
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None]]:
        """Frame ``t``: the new column, and how each state's best got there."""
        step = torch.cat([alpha.new_full((1,), NEG_INF), alpha[:-1]])
        jump = torch.cat([alpha.new_full((2,), NEG_INF), alpha[:-2]])
        jump = torch.where(self.skip, jump, NEG_INF)
        best, choice = torch.stack([alpha, step, jump]).max(0)
        choice = choice.to(torch.uint8)
        emit = self.lp[t, self.labels]
        if self.find is None:
            return best + emit, (choice, None)
        b, cost = self.bounds, self.cost
        before, where = torch.cummax(alpha[b] + cost, 0)  # the best earlier bound, ...
        leave = torch.cat([before.new_full((1,), NEG_INF), before[:-1]]) - cost
        better = leave > best[b]  # ... the words after it left out
        best[b] = torch.where(better, leave, best[b])
        choice[b] = torch.where(better, 3, choice[b]).to(torch.uint8)
        origin = torch.cat([where[:1], where[:-1]]).to(torch.int32)
        emit[b] = torch.maximum(emit[b], self.lp[t, BLANK_ID + 1 :].max()
                                - self.find.garbage_penalty)
        return best + emit, (choice, origin)

    def came_from(self, came: tuple[torch.Tensor, torch.Tensor | None], state: int) -> int:
        choice, origin = came
        c = int(choice[state])
        if c < 3:
            return state - c
        return int(self.bounds[int(origin[self.bound_of[state]])])

    def garbage_on(self, path: torch.Tensor) -> torch.Tensor:
        """Which frames of ``path`` (states) are garbage, not blank."""
        at = torch.isin(path, self.bounds)
        garbage = self.lp[:, BLANK_ID + 1 :].max(1).values - self.find.garbage_penalty
        return at & (garbage > self.lp[:, BLANK_ID])


def align(log_probs: torch.Tensor, words: list[str], tokenizer: Tokenizer, frame_s: float,
          checkpoint: int = 1000) -> list[AlignedWord]:
    """Words and their units in time. ``words``: the transcript as the tokenizer spells it
    (raises CtcasrError naming a word it cannot spell)."""
    per_word = _spell(words, tokenizer)
    on = viterbi(log_probs, [t for ids in per_word for t in ids], checkpoint)
    return _words(on, log_probs, words, per_word, tokenizer, frame_s)


@dataclass
class Found:
    """What :func:`find` found of a transcript in the audio."""

    words: list[AlignedWord]  # the words in the audio, in time (``index``: in the transcript)
    missing: list[int]  # where in the transcript the words not in the audio are
    unmatched: list[tuple[float, float]]  # (start, end) s of speech not in the transcript


def find(log_probs: torch.Tensor, words: list[str], tokenizer: Tokenizer, frame_s: float,
         how: Find = Find(), checkpoint: int = 1000) -> Found:
    """Which parts of a long, imperfect transcript are in the audio, and where (module doc)."""
    per_word = _spell(words, tokenizer)
    starts = [int(k) for k in torch.tensor([0] + [len(i) for i in per_word[:-1]]).cumsum(0)]
    on = viterbi(log_probs, [t for ids in per_word for t in ids], checkpoint,
                 starts if words else [], how)
    aligned = _words(on, log_probs, words, per_word, tokenizer, frame_s)
    unmatched: list[tuple[float, float]] = []
    first = last = None  # a stretch of garbage frames, with only blanks between them
    for t, k in enumerate([*on.tolist(), 0]):
        if k == GARBAGE:
            first, last = t if first is None else first, t
        elif k >= 0 and first is not None:
            unmatched.append((first * frame_s, (last + 1) * frame_s))
            first = None
    return Found([w for w in aligned if w.units], [w.index for w in aligned if not w.units],
                 unmatched)


def _spell(words: list[str], tokenizer: Tokenizer) -> list[list[int]]:
    per_word = []
    for w in words:
        try:
            per_word.append(tokenizer.encode(w))
        except (ValueError, KeyError) as e:
            raise CtcasrError(f"the model cannot spell the word {w!r} ({e})") from None
    return per_word


def _words(on: torch.Tensor, log_probs: torch.Tensor, words: list[str],
           per_word: list[list[int]], tokenizer: Tokenizer, frame_s: float
           ) -> list[AlignedWord]:
    """The words of a path (a word the path left out: no units, times 0)."""
    post = log_probs.float().exp()
    frames: list[list[int]] = [[] for _ in range(sum(map(len, per_word)))]
    for t, k in enumerate(on.tolist()):
        if k >= 0:
            frames[k].append(t)
    out, k = [], 0
    for i, (w, ids) in enumerate(zip(words, per_word, strict=True)):
        units = []
        for tok in ids:
            f = frames[k]
            k += 1
            if not f:
                continue  # (only when finding: the word was left out)
            piece = tokenizer.id_to_piece(tok).removeprefix(SPACE)
            score = float(post[f, tok].mean())
            units.append(Span(piece, f[0] * frame_s, (f[-1] + 1) * frame_s, score))
        spoken = [u for u in units if u.unit] or units  # (a bare word boundary is no sound)
        if not spoken:
            out.append(AlignedWord(w, 0.0, 0.0, 0.0, [], i))
            continue
        out.append(AlignedWord(w, spoken[0].start, spoken[-1].end,
                               sum(u.score for u in spoken) / len(spoken), spoken, i))
    return out
