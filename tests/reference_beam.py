"""The per-prefix Python prefix beam search that ``ctcasr.decode.beam`` replaced, kept only as
a readable oracle for the batched search (tests compare the two on random inputs).

CTC prefix beam search, optionally with a word n-gram LM (shallow fusion).

For every prefix (label sequence so far) we keep two log-probabilities: of all alignments of the
frames so far that produce the prefix and end in a blank (``pb``) or in its last label (``pnb``).
A frame extends a prefix with blank, with a repeat of its last label (merged unless a blank came
in between) or with a new label; the ``beam`` best prefixes survive each frame. With an unbounded
beam and no pruning this is exact: the prefix probability is the sum over all CTC paths
(tests check it against brute-force enumeration).

Per-frame token pruning (vectorised over the whole utterance before the search): a token is
expanded only if it is among the ``topk`` most probable of its frame and within ``prune`` nats of
the frame's best. The blank is always kept. After each frame, prefixes more than ``beam_prune``
below the best (score with the LM terms) are dropped; with ``recombine``, of the prefixes with
the same LM state, the same tokens of the word being spelled and the same last token, only the
best stays.

Shallow fusion: when a token that starts a word is appended (``tokenizer.is_word_start``), the
word it closes is scored by the LM, ``lm_weight * ln P(word | previous words) + word_bonus``;
at the end the last word and the sentence end are scored. A hypothesis's ``score`` is its CTC
log-probability plus these terms.

Out-of-vocabulary words (pyctcdecode's ``unk_score_offset``): a word the LM does not know adds
``unk_penalty`` (<= 0) when it is closed. So that the beam does not fill up with spellings that
can never become a known word, a prefix whose unfinished word is not the beginning of any LM
word is ranked with the penalty already added (it is charged for real only when the word closes).
With ``unk_penalty`` 0 the search is exactly as without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import torch

from ctcasr.decode.greedy import Hypothesis
from ctcasr.tokenizer import BLANK_ID, SPACE

NEG_INF = -math.inf


class WordLM(Protocol):
    order: int
    vocab: set[str]  # the words it knows (``<s>``, ``</s>``, ``<unk>`` may be among them)

    def log_prob(self, context: Sequence[str], word: str) -> float:
        """Natural-log ``P(word | context)``; ``word`` may be ``"</s>"``."""
        ...


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


@dataclass
class _Prefix:
    pb: float = NEG_INF  # ends in blank
    pnb: float = NEG_INF  # ends in its last label
    lm: float = 0.0  # LM score of the words closed so far (weighted, with bonuses)
    oov: float = 0.0  # provisional OOV penalty of ``partial`` (ranking only)
    words: tuple[str, ...] = ()  # closed words
    partial: str = ""  # the word being spelled
    frames: tuple[int, ...] = ()

    @property
    def ctc(self) -> float:
        return _logaddexp(self.pb, self.pnb)


@dataclass(frozen=True)
class LMFusion:
    lm: WordLM
    pieces: Sequence[str]  # token id -> piece (``tokenizer.id_to_piece``)
    weight: float = 0.5
    word_bonus: float = 0.0
    unk_penalty: float = 0.0  # added for each word the LM does not know (<= 0)

    def word_score(self, words: tuple[str, ...], word: str) -> float:
        """Weighted ``ln P(word | <s> words)`` plus the bonus (and the OOV penalty);
        ``</s>`` gets neither."""
        n = self.lm.order - 1  # only the last n words matter; <s> while there are fewer
        ctx = words[len(words) - n :] if len(words) >= n else ("<s>", *words)
        lp = self.weight * self.lm.log_prob(ctx, word)
        if word == "</s>":
            return lp
        return lp + self.word_bonus + (0.0 if word in self.lm.vocab else self.unk_penalty)

    def recombination_key(self, prefix: tuple[int, ...], words: tuple[str, ...]) -> tuple:
        """What the LM's future scores depend on: its state after ``words`` (the id of the
        longest context it lists), the tokens of the word being spelled, and the last token."""
        tables = self.lm.tables
        state = torch.tensor([tables.start])
        for w in words:
            state = tables.score(state, torch.tensor([tables.words.get(w, tables.unk)]))[1]
        opens = [i for i, k in enumerate(prefix) if self.pieces[k].startswith(SPACE)]
        return int(state), prefix[opens[-1] if opens else 0 :], prefix[-1:]

    @cached_property
    def _word_starts(self) -> frozenset[str]:
        return frozenset(w[:i] for w in self.lm.vocab for i in range(1, len(w) + 1))

    def partial_penalty(self, partial: str) -> float:
        """``unk_penalty`` if no LM word begins with ``partial`` (the word being spelled)."""
        if not self.unk_penalty or not partial or partial in self._word_starts:
            return 0.0
        return self.unk_penalty * max(1.0, len(partial) / 6)  # longer than 6: in proportion


def prefix_beam_search(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    beam: int = 10,
    nbest: int = 1,
    topk: int = 0,
    prune: float = math.inf,
    fusion: LMFusion | None = None,
    beam_prune: float = math.inf,
    recombine: bool = True,
) -> list[list[Hypothesis]]:
    """``log_probs [B, T, V]``, ``lengths [B]`` -> for each utterance its ``nbest`` best."""
    out = []
    lp = log_probs.detach().float().cpu()
    for b, n in enumerate(lengths.tolist()):
        cands = _candidates(lp[b, :n], topk, prune)
        out.append(_search(cands, lp[b, :n].tolist(), beam, nbest, fusion, beam_prune,
                           recombine))
    return out


def _candidates(lp: torch.Tensor, topk: int, prune: float) -> list[list[tuple[int, float]]]:
    """Per frame, the (token, log-prob) pairs to expand, blank first."""
    t, v = lp.shape
    keep = torch.ones_like(lp, dtype=torch.bool)
    if 0 < topk < v - 1:  # the k best non-blank tokens
        nonblank = lp.index_fill(1, torch.tensor([BLANK_ID]), -math.inf)
        keep = torch.zeros_like(keep).scatter_(1, nonblank.topk(topk, dim=1).indices, True)
    if math.isfinite(prune):
        keep &= lp >= lp.max(dim=1, keepdim=True).values - prune
    keep[:, BLANK_ID] = True
    frame, token = keep.nonzero(as_tuple=True)
    values = lp[frame, token].tolist()
    cands: list[list[tuple[int, float]]] = [[] for _ in range(t)]
    for f, k, val in zip(frame.tolist(), token.tolist(), values, strict=True):
        cands[f].append((k, val))
    return cands


def _search(
    cands: list[list[tuple[int, float]]], lp: list[list[float]], beam: int, nbest: int,
    fusion: LMFusion | None, beam_prune: float, recombine: bool
) -> list[Hypothesis]:
    beams: dict[tuple[int, ...], _Prefix] = {(): _Prefix(pb=0.0)}
    for t, frame in enumerate(cands):
        nxt: dict[tuple[int, ...], _Prefix] = {}
        for prefix, st in beams.items():
            total = st.ctc
            last = prefix[-1] if prefix else None
            for k, lpk in frame:
                if k == BLANK_ID:
                    p = _entry(nxt, prefix, st, None, t, fusion)
                    p.pb = _logaddexp(p.pb, total + lpk)
                    continue
                ext = prefix + (k,)
                p = _entry(nxt, ext, st, k, t, fusion)
                if k == last:
                    p.pnb = _logaddexp(p.pnb, st.pb + lpk)  # a blank separated the repeat
                    same = _entry(nxt, prefix, st, None, t, fusion)
                    same.pnb = _logaddexp(same.pnb, st.pnb + lpk)  # merged repeat
                else:
                    p.pnb = _logaddexp(p.pnb, total + lpk)
            if len(frame) == 1:  # only blank in reach: a blank frame
                continue
            # pruned tokens make no new prefix, but the paths of those in the beam count
            listed = {k for k, _ in frame}
            if last is not None and last not in listed:
                same = _entry(nxt, prefix, st, None, t, fusion)
                same.pnb = _logaddexp(same.pnb, st.pnb + lp[t][last])
            for k in range(1, len(lp[t])):
                if k not in listed and prefix + (k,) in beams:
                    p = _entry(nxt, prefix + (k,), st, k, t, fusion)
                    p.pnb = _logaddexp(p.pnb, (st.pb if k == last else total) + lp[t][k])
        ranked = _viable(sorted(nxt.items(), key=lambda kv: kv[1].ctc + kv[1].lm + kv[1].oov,
                                reverse=True), lambda kv: kv[1].lm + kv[1].oov)
        ranked = ranked[:beam]
        best = ranked[0][1].ctc + ranked[0][1].lm + ranked[0][1].oov
        beams = dict(kv for kv in ranked
                     if kv[1].ctc + kv[1].lm + kv[1].oov >= best - beam_prune)
        if recombine and fusion is not None:  # the best of each LM state + word + last token
            seen: set = set()
            for prefix in list(beams):
                key = fusion.recombination_key(prefix, beams[prefix].words)
                if key in seen:
                    del beams[prefix]
                seen.add(key)
    final = []
    for prefix, st in beams.items():
        score = st.ctc + st.lm
        if fusion is not None:
            words = st.words
            if st.partial:
                score += fusion.word_score(words, st.partial)
                words = (*words, st.partial)
            score += fusion.word_score(words, "</s>")
        final.append(Hypothesis(list(prefix), score, list(st.frames)))
    final.sort(key=lambda h: h.score, reverse=True)
    return _viable(final, lambda h: h.score)[:nbest]


def _viable(ranked: list, score) -> list:
    """``ranked`` without the entries an infinite OOV penalty ruled out (``score`` -inf),
    unless that leaves nothing."""
    kept = [x for x in ranked if score(x) != NEG_INF]
    return kept or ranked


def _entry(nxt: dict[tuple[int, ...], _Prefix], prefix: tuple[int, ...], parent: _Prefix,
           token: int | None, t: int, fusion: LMFusion | None) -> _Prefix:
    """``nxt[prefix]``, created from ``parent`` (+ ``token`` when not None) if new."""
    p = nxt.get(prefix)
    if p is None:
        if token is None:
            p = _Prefix(lm=parent.lm, oov=parent.oov, words=parent.words,
                        partial=parent.partial, frames=parent.frames)
        else:
            p = _extend(parent, token, t, fusion)
        nxt[prefix] = p
    return p


def _extend(parent: _Prefix, token: int, t: int, fusion: LMFusion | None) -> _Prefix:
    """A new prefix = ``parent`` + ``token`` (probabilities still -inf), its LM state updated."""
    child = _Prefix(lm=parent.lm, words=parent.words, partial=parent.partial,
                    frames=(*parent.frames, t))
    if fusion is None:
        return child
    piece = fusion.pieces[token]
    if piece.startswith(SPACE):
        if child.partial:
            child.lm += fusion.word_score(child.words, child.partial)
            child.words = (*child.words, child.partial)
        child.partial = piece[len(SPACE):]
    else:
        child.partial += piece
    child.oov = fusion.partial_penalty(child.partial)
    return child
