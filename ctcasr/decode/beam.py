"""CTC prefix beam search, batched: all prefixes of all utterances advance by one frame in a
few tensor operations, on the device the log-probs are on.

For every prefix (label sequence so far) we keep two log-probabilities: of all alignments of the
frames so far that produce the prefix and end in a blank (``pb``) or in its last label (``pnb``).
A frame extends a prefix with blank, with a repeat of its last label (merged unless a blank came
in between) or with a new label; the ``beam`` best prefixes survive each frame. With an unbounded
beam and no pruning this is exact: the prefix probability is the sum over all CTC paths
(tests check it against brute-force enumeration).

Each frame, for ``[B, beam]`` prefixes and the ``W`` tokens worth expanding, the candidates are
the ``beam`` prefixes themselves (blank / merged repeat) and the ``beam * W`` extensions; one
``topk`` keeps the best ``beam``. Only the ``M`` (utterance, token) pairs that are worth expanding
are scored (``[M, beam]``), not every utterance padded to the batch's widest frame. Prefixes
are identified by a 64-bit rolling hash of their tokens:
an extension ``A + c`` that is already in the beam as ``B`` (``hash(A) == parent_hash(B)`` and
``c == last(B)``) is added into ``B`` instead of competing with it. Token histories are kept as
back-pointers and read back once at the end.

Per-frame token pruning: a new prefix is made only with a token among the ``topk`` most probable
of its frame (0: ``beam + 1``) and within ``prune`` nats of the frame's best; the paths of
prefixes already in the beam (a repeated last label, ``A -> A + c`` with both in the beam)
always count, pruned or not. ``beam + 1`` is exact without an LM: a frame's candidates from one
prefix rank as their token's log-prob (only the repeat of its last label can rank lower), and
``beam`` of them at most can survive. With the LM, a token below the frame's best ``beam + 1``
survives only if the LM lifts it over them; with a 1000-piece vocabulary this bound is what
keeps the work per frame small. A frame of an utterance with no non-blank token within reach is
a blank frame: the runs of them between the other frames are added in one operation (all
prefixes just end in blank; none can change rank).

Hypothesis pruning (pyctcdecode's ``beam_prune_logp``): after each frame, prefixes whose score
(with the LM terms) is more than ``beam_prune`` below the frame's best are dropped. With the LM,
prefixes that the LM cannot tell apart from here on (the same LM state, the same tokens of the
word being spelled, the same last token) are recombined: only the best stays, and the beam
holds more distinct word sequences (``recombine``; what it is worth: docs/decoding.md).

Shallow fusion with a word n-gram LM, the out-of-vocabulary penalty and an open vocabulary:
:mod:`ctcasr.decode.fusion` (the LM's words spelled in a trie over the model's tokens); here
each frame's candidates get their terms (:func:`_with_lm`) and the chosen prefixes' LM state
follows them (:func:`_lm_update`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ctcasr.decode.context import ContextGraph
from ctcasr.decode.fusion import NEG_INF, LMFusion
from ctcasr.decode.greedy import Hypothesis
from ctcasr.lm.ngram import lookup
from ctcasr.tokenizer import BLANK_ID

RULED_OUT = -1e300  # rank of a real prefix whose score an infinite OOV penalty made -inf
_HASH = 1_000_003  # multiplier of the prefix hash (int64 arithmetic wraps around)
_MIX = (-0x61C8864680B583EB, -0x40A7B892E31B1A47)  # odd 64-bit multipliers (golden ratio,
# splitmix64) mixing (LM state, word hash, last token) into one key; a small multiplier like
# _HASH lets state * _HASH + word hash collide across states


@dataclass
class _Beams:
    """The prefixes of a batch: ``[B, K]`` tensors, one column per slot (an empty slot has
    ``pb = pnb = -inf``)."""

    pb: torch.Tensor  # log-prob of the alignments ending in blank
    pnb: torch.Tensor  # ... ending in the last label
    lm: torch.Tensor  # LM terms of the closed words
    oov: torch.Tensor  # provisional penalty of the word being spelled
    last: torch.Tensor  # last label (-1: empty prefix)
    h: torch.Tensor  # prefix hash
    ph: torch.Tensor  # hash of the prefix without its last label
    node: torch.Tensor  # spelling trie node of the word being spelled
    state: torch.Tensor  # LM state
    spelt: torch.Tensor  # characters of the word being spelled
    wh: torch.Tensor  # hash of the tokens of the word being spelled
    cst: torch.Tensor  # hotwords: the state in the context graph ...
    csc: torch.Tensor  # ... and the context score so far (partial matches included)

    EMPTY = {"pb": NEG_INF, "pnb": NEG_INF, "last": -1}  # fill of new slots; the rest 0

    @classmethod
    def start(cls, b: int, lm_state: int, device: torch.device,
              context: ContextGraph | None = None) -> _Beams:
        f, i = dict(dtype=torch.float64, device=device), dict(dtype=torch.int64, device=device)
        z, zi = torch.zeros((b, 1), **f), torch.zeros((b, 1), **i)
        cst = zi + (context.start if context is not None else 0)
        csc = context.unfinished(cst) if context is not None else z
        return cls(z, z - math.inf, z, z, zi - 1, zi, zi, zi, zi + lm_state, zi, zi, cst, csc)

    def fields(self) -> dict[str, torch.Tensor]:
        return dict(vars(self))

    @property
    def ctc(self) -> torch.Tensor:
        return torch.logaddexp(self.pb, self.pnb)

    def blanks(self, logp: torch.Tensor) -> None:
        """Frames where only blank was worth expanding, ``logp [B, 1]`` their blank log-probs
        summed (NaN: none): every prefix stays and now ends in blank; the ranking cannot change."""
        some = ~logp.isnan()
        self.pb = torch.where(some, self.ctc + logp, self.pb)
        self.pnb = self.pnb.masked_fill(some, NEG_INF)

    def grow(self, n: int) -> _Beams:
        return _Beams(**{f: F.pad(x, (0, n), value=self.EMPTY.get(f, 0))
                         for f, x in self.fields().items()})

    def where(self, cond: torch.Tensor, other: _Beams) -> _Beams:
        """This where ``cond`` [B, 1], else ``other``."""
        o = other.fields()
        return _Beams(**{f: torch.where(cond, x, o[f]) for f, x in self.fields().items()})


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
    context: ContextGraph | None = None,
) -> list[list[Hypothesis]]:
    """``log_probs [B, T, V]``, ``lengths [B]`` -> for each utterance its ``nbest`` best
    (``context``: hotwords, :mod:`ctcasr.decode.context`)."""
    if log_probs.shape[0] == 0:
        return []
    search = BeamSearch(log_probs.shape[0], beam, topk, prune, fusion, beam_prune, recombine,
                        log_probs.device, context)
    search.advance(log_probs, lengths)
    return search.best(nbest)


class BeamSearch:
    """The prefix beam search of a batch, frame-synchronous: ``advance`` with each chunk of
    log-probs as it comes (a stream), ``best`` at any time. Fed in chunks it gives the result of
    one ``prefix_beam_search`` over the whole (the sums of skipped blank frames are grouped
    differently: equal to float64 rounding)."""

    def __init__(self, batch: int, beam: int = 10, topk: int = 0, prune: float = math.inf,
                 fusion: LMFusion | None = None, beam_prune: float = math.inf,
                 recombine: bool = True, device: torch.device | str = "cpu",
                 context: ContextGraph | None = None) -> None:
        self.beam, self.topk, self.prune, self.fusion = beam, topk, prune, fusion
        self.beam_prune, self.recombine, self.device = beam_prune, recombine, torch.device(device)
        self.context = context.to(self.device) if context is not None else None
        self.beams = _Beams.start(batch, fusion.tables(self.device)[0].start if fusion else 0,
                                  self.device, self.context)
        self.parents: list[torch.Tensor] = []  # per busy frame: each slot's parent slot
        self.emitted: list[torch.Tensor] = []  # ... the label each slot appended (-1: none)
        self.frames: list[torch.Tensor] = []  # [B, T'] per chunk: those frames' numbers
        self.offset = torch.zeros(batch, dtype=torch.int64, device=self.device)

    def advance(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> None:
        """The next ``lengths [B]`` frames of each utterance, ``log_probs [B, T, V]``."""
        lp_all = log_probs.detach().to(self.device)
        lengths = lengths.to(self.device)
        frames, n, lp_all, cand, tok, before, tail = _busy_frames(
            lp_all, lengths, self.topk or self.beam + 1, self.prune)
        widths = (cand > NEG_INF).sum(-1).amax(0).tolist()
        skips = (~before.isnan()).any(0).tolist()  # steps where some utterance skipped frames
        everyone = int(n.min()) if len(n) else 0  # steps all utterances take part in
        beams, beam = self.beams, self.beam
        for j, w in enumerate(widths):
            if skips[j]:
                beams.blanks(before[:, j, None])
            k = beams.pb.shape[1]
            if k < beam:  # room for more: add empty slots
                beams = beams.grow(min(beam, k * (1 + w)) - k)
            nxt, parent, new = _step(beams, lp_all[:, j].to(torch.float64),
                                     cand[:, j, :w].to(torch.float64), tok[:, j, :w],
                                     self.fusion, self.beam_prune, self.recombine, self.context)
            if j >= everyone:  # utterances that have ended keep their beams
                active = (j < n)[:, None]
                nxt = nxt.where(active, beams)
                parent = torch.where(active, parent,
                                     torch.arange(parent.shape[1], device=self.device))
                new = new.masked_fill(~active, -1)
            beams = nxt
            self.parents.append(parent)
            self.emitted.append(new)
        beams.blanks(tail[:, None])
        self.beams = beams
        self.frames.append(frames + self.offset[:, None])
        self.offset = self.offset + lengths

    def best(self, nbest: int = 1) -> list[list[Hypothesis]]:
        """For each utterance its ``nbest`` best so far (the word being spelled and the
        sentence end scored by the LM, as at the end of the audio)."""
        beams, dev = self.beams, self.device
        score = beams.ctc + beams.lm
        if self.context is not None:  # completed hotwords count; a partial match does not
            score = score + beams.csc - self.context.unfinished(beams.cst)
        if self.fusion is not None:
            closed, closed_state = self.fusion.close(beams.node, beams.state, dev)
            score = score + closed + self.fusion.end(closed_state, dev)
        frames = torch.cat(self.frames, 1) if self.frames else \
            torch.zeros(beams.pb.shape[0], 0, dtype=torch.int64, device=dev)
        return _nbest(score, beams.ctc > NEG_INF, self.parents, self.emitted, frames, nbest)


def _step(beams: _Beams, lp: torch.Tensor, cand: torch.Tensor, tok: torch.Tensor,
          fusion: LMFusion | None, beam_prune: float, recombine: bool,
          context: ContextGraph | None = None) -> tuple[_Beams, torch.Tensor, torch.Tensor]:
    """One frame: ``lp [B, V]`` log-probs, ``tok [B, W]`` the tokens that may make new
    prefixes and ``cand`` their log-probs (best first; -inf: none) -> the new beams (without
    those more than ``beam_prune`` below the best), each slot's parent slot, and the label each
    slot appended (-1: none)."""
    c = _ctc_candidates(beams, lp, cand, tok)
    lm = _with_lm(beams, c, fusion, lp.device) if fusion is not None else None
    kept_score, ext_score = (c.stay, c.ext) if lm is None else (lm.kept, lm.ext)
    if context is not None:  # hotwords: each prefix's context score, and the extension's change
        c_state, c_delta = context.step(c.at_row(beams.cst), c.tok[:, None])
        kept_score = kept_score + beams.csc
        ext_score = ext_score + c.at_row(beams.csc) + c_delta
    nxt, parent, kept, new, flat = _select(beams, c, kept_score, ext_score, tok, beam_prune)
    if context is not None:
        chosen = flat.clamp(min=0)
        nxt.cst = torch.where(kept, nxt.cst, c_state.view(-1)[chosen])
        nxt.csc = torch.where(kept, nxt.csc, nxt.csc + c_delta.view(-1)[chosen])
    if fusion is not None:
        assert lm is not None
        _lm_update(nxt, parent, kept, new, fusion, lm, recombine, lp.device)
    return nxt, parent, torch.where(kept, -1, new)


@dataclass
class _Candidates:
    """A frame's candidates, CTC scores only: the ``[B, K]`` prefixes staying (a blank or a
    merged repeat) and the ``[M, K]`` extensions by the ``M`` tokens the rows really have
    (``[M, K]``, not ``[B, K, W]``: W is the batch's widest row, on average 4-6 times a row's
    width), scattered into the ``[B, K + K * W]`` ranking only just before the ``topk``."""

    stay_pb: torch.Tensor  # [B, K]
    stay_pnb: torch.Tensor  # [B, K]
    stay: torch.Tensor  # [B, K]
    ext: torch.Tensor  # [M, K]
    row: torch.Tensor  # [M] each candidate token's row (utterance) ...
    col: torch.Tensor  # [M] ... and column in ``tok``
    tok: torch.Tensor  # [M] the token
    width: torch.Tensor  # [B] tokens per row
    first: torch.Tensor  # [B] the index in M of each row's column 0

    def at_row(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, K] -> [M, K]``: the row of each candidate token."""
        return x.index_select(0, self.row)


def _ctc_candidates(bm: _Beams, lp: torch.Tensor, cand: torch.Tensor,
                    tok: torch.Tensor) -> _Candidates:
    total = bm.ctc
    valid = total > NEG_INF
    last_lp = lp.gather(1, bm.last.clamp(min=0))
    stay_pb = total + lp[:, BLANK_ID, None]
    stay_pnb = torch.where(bm.last >= 0, bm.pnb + last_lp, NEG_INF)  # merged repeat
    some = cand > NEG_INF  # a row's tokens are its columns 0 .. width - 1
    row, col = some.nonzero(as_tuple=True)  # [M]: the candidate tokens, row by row
    width = some.sum(1)
    c_tok = tok[row, col]
    same = c_tok[:, None] == bm.last.index_select(0, row)  # [M, K]: repeats the last label
    ext = torch.where(same, bm.pb.index_select(0, row), total.index_select(0, row)) \
        + cand[row, col][:, None]
    # B = A + c with A in the beam too: the paths A -> A + c add into B (pruned c or not), and
    # the candidate (A, c) goes
    match = (bm.h[:, :, None] == bm.ph[:, None, :]) & valid[:, :, None] \
        & (valid & (bm.last >= 0))[:, None, :]  # [B, A, B]
    found, src = match.max(1)  # A for each B
    via = torch.where(bm.last.gather(1, src) == bm.last, bm.pb.gather(1, src),
                      total.gather(1, src)) + last_lp
    stay_pnb = torch.where(found, torch.logaddexp(stay_pnb, via), stay_pnb)
    if bool(found.any()):
        m, slot = same.nonzero(as_tuple=True)  # B's last label is candidate m of its row
        listed = torch.zeros_like(found)
        listed[row[m], slot] = True
        at = torch.zeros_like(src)
        at[row[m], slot] = m
        rows, cols = (found & listed).nonzero(as_tuple=True)
        ext[at[rows, cols], src[rows, cols]] = NEG_INF
    return _Candidates(stay_pb, stay_pnb, torch.logaddexp(stay_pb, stay_pnb), ext, row, col,
                       c_tok, width, width.cumsum(0) - width)


@dataclass
class _LMTerms:
    kept: torch.Tensor  # [B, K] ranking scores of the staying prefixes (LM terms added)
    ext: torch.Tensor  # [M, K] ... of the extensions
    closing: bool  # some candidate closes a word at this frame
    closed: torch.Tensor | None  # [B, K] the score of closing each prefix's word ...
    closed_state: torch.Tensor | None  # ... and the LM state after it


def _with_lm(bm: _Beams, c: _Candidates, fusion: LMFusion, device: torch.device) -> _LMTerms:
    """The candidates' ranking scores with the LM terms of the words they close and the
    ranking term of the word being spelled (the OOV penalty, an open vocabulary's look-ahead)."""
    _, sp = fusion.tables(device)
    starts = lookup(sp.starts, c.tok)[:, None]  # [M, 1]
    closing = bool(starts.any())  # a word can close at this frame (else: no LM lookup)
    add = c.at_row(bm.lm)
    closed = closed_state = None
    if closing:
        closed, closed_state = fusion.close(bm.node, bm.state, device)
        add = add + torch.where(starts, c.at_row(closed), 0.0)
    if fusion.dead_penalty:  # (a ranking term for the word being spelled; else it is 0)
        node = torch.where(starts, lookup(sp.start_node, c.tok)[:, None],
                           sp.step(c.at_row(bm.node), c.tok[:, None]))
        spelt = lookup(sp.length, c.tok)[:, None] + torch.where(starts, 0, c.at_row(bm.spelt))
        add = add + fusion.oov(node, spelt, device)
    kept, ext = c.stay + bm.lm + bm.oov, c.ext + add
    if NEG_INF in (fusion.unk_penalty, fusion.dead_penalty):  # real prefixes an infinite
        # penalty ruled out: last
        kept, ext = _rank_ruled_out(kept, c.stay), _rank_ruled_out(ext, c.ext)
    return _LMTerms(kept, ext, closing, closed, closed_state)


def _select(bm: _Beams, c: _Candidates, kept_score: torch.Tensor, ext_score: torch.Tensor,
            tok: torch.Tensor, beam_prune: float
            ) -> tuple[_Beams, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``K`` best of the staying prefixes and the extensions: (the new beams, each slot's
    parent slot, whether the slot's prefix stayed, the token it appended, the index of its
    extension in the flattened ``[M, K]`` candidates, -1 where none)."""
    b, k = bm.pb.shape
    w = tok.shape[1]
    score = torch.full((b, k + k * w), NEG_INF, dtype=c.ext.dtype, device=c.ext.device)
    score[:, :k] = kept_score
    score[:, k:].view(b, k, w)[c.row, :, c.col] = ext_score
    top, sel = score.topk(k, dim=1)  # [B, K], best first
    kept = sel < k  # the slot's prefix stayed; else it is an extension
    e = (sel - k).clamp(min=0)
    a, j = e // w, e % w
    parent = torch.where(kept, sel, a)
    new = tok.gather(1, j)
    real = ~kept & (j < c.width[:, None])  # else a -inf filler the topk had to take
    flat = torch.where(real, (c.first[:, None] + j) * k + a, -1)
    ext_pnb = F.pad(c.ext.view(-1), (0, 1), value=NEG_INF)  # [M * K + 1]: the last is -inf
    ext_pnb = ext_pnb[torch.where(real, flat, len(ext_pnb) - 1)]
    hp = bm.h.gather(1, parent)
    nxt = _Beams(pb=torch.where(kept, c.stay_pb.gather(1, parent), NEG_INF),
                 pnb=torch.where(kept, c.stay_pnb.gather(1, parent), ext_pnb),
                 lm=bm.lm.gather(1, parent), oov=bm.oov.gather(1, parent),
                 last=torch.where(kept, bm.last.gather(1, parent), new),
                 h=torch.where(kept, hp, hp * _HASH + new + 1),
                 ph=torch.where(kept, bm.ph.gather(1, parent), hp),
                 node=bm.node.gather(1, parent), state=bm.state.gather(1, parent),
                 spelt=bm.spelt.gather(1, parent), wh=bm.wh.gather(1, parent),
                 cst=bm.cst.gather(1, parent), csc=bm.csc.gather(1, parent))
    if math.isfinite(beam_prune):  # too far below the best: the slot is emptied
        cut = top < top[:, :1] - beam_prune
        nxt.pb, nxt.pnb = nxt.pb.masked_fill(cut, NEG_INF), nxt.pnb.masked_fill(cut, NEG_INF)
    return nxt, parent, kept, new, flat


def _lm_update(nxt: _Beams, parent: torch.Tensor, kept: torch.Tensor, new: torch.Tensor,
               fusion: LMFusion, lm: _LMTerms, recombine: bool, device: torch.device) -> None:
    """The chosen prefixes' LM side: the words their extensions closed, the spelling of the
    word in progress, and (``recombine``) of prefixes the LM cannot tell apart from here on,
    only the best kept."""
    _, sp = fusion.tables(device)
    opens = lookup(sp.starts, new)
    if lm.closing:
        assert lm.closed is not None and lm.closed_state is not None
        word = opens & ~kept  # the extension closed its parent's word
        nxt.lm = torch.where(word, nxt.lm + lm.closed.gather(1, parent), nxt.lm)
        nxt.state = torch.where(word, lm.closed_state.gather(1, parent), nxt.state)
    grown = torch.where(opens, lookup(sp.start_node, new), sp.step(nxt.node, new))
    nxt.node = torch.where(kept, nxt.node, grown)
    spelt = lookup(sp.length, new) + torch.where(opens, 0, nxt.spelt)
    nxt.spelt = torch.where(kept, nxt.spelt, spelt)
    nxt.oov = fusion.oov(nxt.node, nxt.spelt, device)
    nxt.wh = torch.where(kept, nxt.wh, torch.where(opens, 0, nxt.wh) * _HASH + new + 1)
    if recombine:
        k = nxt.pb.shape[1]
        key = ((nxt.state * _MIX[0] + nxt.wh) * _MIX[1] + nxt.last) * _MIX[0] + nxt.cst
        live = nxt.ctc > NEG_INF
        before = torch.ones(k, k, dtype=torch.bool, device=key.device).tril(-1)  # j < i
        dup = ((key[:, :, None] == key[:, None, :]) & before & live[:, None, :]).any(2)
        nxt.pb = nxt.pb.masked_fill(dup, NEG_INF)
        nxt.pnb = nxt.pnb.masked_fill(dup, NEG_INF)


def _rank_ruled_out(score: torch.Tensor, ctc: torch.Tensor) -> torch.Tensor:
    """Scores an infinite OOV penalty made -inf, of prefixes that are real (``ctc`` > -inf),
    ranked last but above the empty slots."""
    return torch.where(score > NEG_INF, score, torch.full_like(score, NEG_INF).masked_fill_(
        ctc > NEG_INF, RULED_OUT))


def _busy_frames(lp: torch.Tensor, lengths: torch.Tensor, topk: int, prune: float):
    """The frames that have a non-blank token worth expanding (among the ``topk`` best of the
    frame, within ``prune`` of its best), packed to the left per utterance: their frame numbers
    ``[B, T']``, how many ``[B]``, their log-probs ``[B, T', V]``, and those tokens best first
    ``[B, T', topk]`` with their log-probs (-inf past the last worth expanding); and the blank
    log-probs of the frames skipped before each of them ``[B, T']`` and after the last ``[B]``,
    summed (NaN where none were skipped)."""
    b, t, v = lp.shape
    assert BLANK_ID == 0  # the non-blank tokens are lp[..., 1:]
    floor = lp.amax(-1) - prune
    inside = torch.arange(t, device=lp.device) < lengths[:, None]
    best = lp[..., 1:].amax(-1)
    busy = (best >= floor) & (best > NEG_INF) & inside
    n = busy.sum(1)
    frames = torch.sort((~busy).to(torch.uint8), dim=1, stable=True).indices[:, : int(n.max())]
    past = torch.arange(frames.shape[1], device=lp.device) >= n[:, None]
    packed = lp.gather(1, frames[..., None].expand(-1, -1, v))  # only these frames need topk
    cand, tok = packed[..., 1:].topk(min(topk, v - 1), dim=-1)
    tok += 1
    cand = cand.masked_fill((cand < floor.gather(1, frames)[..., None]) | past[..., None],
                            NEG_INF)
    cum = lp[..., BLANK_ID].to(torch.float64).masked_fill(busy | ~inside, 0.0).cumsum(1)
    cum = F.pad(cum, (1, 0))  # cum[:, i] = blank log-probs of the skipped frames before i

    def skipped(start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:  # frames start..end-1
        total = cum.gather(1, end) - cum.gather(1, start)
        return total.masked_fill(end <= start, math.nan)

    prev = F.pad(frames[:, :-1] + 1, (1, 0))  # the frame after the previous busy one
    before = skipped(prev, frames).masked_fill(past, math.nan)
    last = frames.gather(1, (n - 1).clamp(min=0)[:, None]).squeeze(1) + 1 if frames.shape[1] \
        else torch.zeros_like(n)  # (no frame of any utterance is busy)
    tail = skipped(torch.where(n > 0, last, 0)[:, None], lengths[:, None]).squeeze(1)

    return frames, n, packed, cand, tok, before, tail


def _nbest(score: torch.Tensor, valid: torch.Tensor, parents: list[torch.Tensor],
           emitted: list[torch.Tensor], frames: torch.Tensor, nbest: int) -> list[list[Hypothesis]]:
    """Read the token histories back and rank: for each utterance its ``nbest`` best, without
    those an infinite OOV penalty ruled out unless nothing else is left."""
    b, k = score.shape
    cur = torch.arange(k, device=score.device).expand(b, k)
    toks = []
    for par, em in zip(reversed(parents), reversed(emitted), strict=True):
        cur = cur.clamp(max=par.shape[1] - 1)  # slots added later (empty back then)
        toks.append(em.gather(1, cur))
        cur = par.gather(1, cur)
    hist = torch.stack(toks[::-1], -1).cpu() if toks else torch.empty(b, k, 0, dtype=torch.int64)
    at = frames.tolist()
    scores, valid = score.tolist(), valid.tolist()
    out = []
    for i in range(b):
        slots = [j for j in range(k) if valid[i][j]]
        finite = [j for j in slots if scores[i][j] > NEG_INF]
        hyps = []
        for j in sorted(finite or slots, key=lambda j: -scores[i][j])[:nbest]:
            labels = hist[i, j].tolist()
            hyps.append(Hypothesis([t for t in labels if t >= 0], scores[i][j],
                                   [f for t, f in zip(labels, at[i], strict=True) if t >= 0]))
        out.append(hyps)
    return out
