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
are scored (``[M, beam]``): padding every utterance to the batch's widest frame would do 4-6 times
the work on speechocean. Prefixes are identified by a 64-bit rolling hash of their tokens:
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
holds more distinct word sequences (``recombine``; on speechocean, -0.1 to -0.35 WER points).

Shallow fusion: when a token that starts a word is appended (its piece begins with ``▁``), the
word it closes is scored by the LM, ``lm_weight * ln P(word | previous words) + word_bonus``;
at the end the last word and the sentence end are scored. A hypothesis's ``score`` is its CTC
log-probability plus these terms. The LM is scored from integer tables (``NGramLM.tables``):
a hypothesis carries its LM state id and the trie node of the word it is spelling.

Out-of-vocabulary words (pyctcdecode's ``unk_score_offset``): a word the LM does not know adds
``unk_penalty`` (<= 0) when it is closed. So that the beam does not fill up with spellings that
can never become a known word, a prefix whose unfinished word is not the beginning of any LM
word is ranked with the penalty already added, times its length in characters over 6 when it is
longer (pyctcdecode's rule; it is charged for real, once, only when the word closes).
With ``unk_penalty`` 0 the search is exactly as without it; with ``-inf`` only LM words survive
(unless nothing else does).

Open vocabulary (``LMFusion.extra``: words with counts, e.g. a word-frequency list): the trie
also spells words the LM does not have; such a word is closed as a member of the LM's ``<unk>``
class, ``lm_weight * (ln P(<unk> | previous words) + ln P(word | <unk>)) + word_bonus +
unk_penalty``, with ``P(word | <unk>)`` its share of the extra words' counts, so a word the
training text never had can still be output and a common one is preferred to a rare one; a
spelling that is no word of either (a ``DEAD`` node) is then ruled out, as with ``-inf``. A word
the LM has shadows an extra word spelled the same; of extra words spelled the same, the most
frequent stays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from ctcasr.decode.greedy import Hypothesis
from ctcasr.lm.ngram import EOS, UNK, LMTables, NGramLM, lookup
from ctcasr.tokenizer import BLANK_ID, SPACE

NEG_INF = -math.inf
DEAD = -1  # trie node of a partial word that no LM word begins with
LONG_WORD = 6  # characters: a beginning no LM word has is ranked down in proportion to its
# length beyond this (pyctcdecode's AVG_TOKEN_LEN), so long runs of letters without a space go
RULED_OUT = -1e300  # rank of a real prefix whose score an infinite OOV penalty made -inf
_HASH = 1_000_003  # multiplier of the prefix hash (int64 arithmetic wraps around)
_MIX = (-0x61C8864680B583EB, -0x40A7B892E31B1A47)  # odd 64-bit multipliers (golden ratio,
# splitmix64) mixing (LM state, word hash, last token) into one key; a small multiplier like
# _HASH lets state * _HASH + word hash collide across states


@dataclass
class Spelling:
    """The LM's words spelled with the model's tokens: a trie over the beginnings of LM words.
    Node 0 is "nothing spelled yet"; ``DEAD`` is a beginning no LM word has. A word is spelled
    by its characters, or, for a phone model, by each of its pronunciations (the tokenizer's
    :meth:`~ctcasr.tokenizer.Tokenizer.spelling`): then homophones share a node, and the LM
    picks among them (``alts``)."""

    starts: torch.Tensor  # [V] bool: the token's piece begins a word (``▁...``)
    start_node: torch.Tensor  # [V] node after a word-starting token
    keys: torch.Tensor  # sorted ``node * V + token`` for each continuing token that stays in
    child: torch.Tensor  # the trie, and the node it leads to
    word: torch.Tensor  # [N] LM word id of each node (``unk`` where it is no whole word)
    is_word: torch.Tensor  # [N] bool
    length: torch.Tensor  # [V] characters the token adds to the word being spelled
    dense: torch.Tensor | None = None  # [(N + 1) * V] int32 child of (node + 1, token), when small
    alts: tuple[torch.Tensor, ...] = ()  # [N] each: the node's other words (homophones; -1 none)
    extra: torch.Tensor | None = None  # [N] the node's word among ``names`` (-1: none), a word
    names: tuple[str, ...] = ()  # outside the LM (open vocabulary) ...
    extra_logp: torch.Tensor | None = None  # [len(names)] ... and its ln P(word | <unk>)
    ahead: torch.Tensor | None = None  # [N] the best ln P(word | <unk>) of the extra words a
    # node leads to; inf where it leads to an LM word (no look-ahead: as without extra words)

    DENSE_MAX = 1 << 24  # entries (64 MB): a character or 1000-piece vocabulary over ~10k words

    @classmethod
    def build(cls, tables: LMTables, pieces: Sequence[str], spell=None,
              extra: Mapping[str, float] | None = None) -> Spelling:
        """``spell``: word -> its spellings in the alphabet of ``pieces`` (default: itself);
        given (a phone model), every word begins with a word-start token: nothing continues
        the empty spelling (characters: the first word has no ``▁`` before it). ``extra``:
        word -> count, words outside the LM that the trie spells too (where no LM word has the
        spelling)."""
        nodes, spelled, other = {"": 0}, {}, {}
        spell_of = spell if spell is not None else (lambda w: [w])

        def add(sp: str) -> None:
            for i in range(1, len(sp) + 1):
                nodes.setdefault(sp[:i], len(nodes))

        for w in sorted(tables.words):
            if spell is not None and w.startswith("<") and w.endswith(">"):
                continue  # <s>, </s>, <unk>: not words to pronounce
            for sp in spell_of(w):
                add(sp)
                spelled.setdefault(sp, []).append(tables.words[w])
        extra = {w: c for w, c in (extra or {}).items() if w not in tables.words and c > 0}
        names = tuple(sorted(extra, key=lambda w: (-extra[w], w)))  # the most frequent first
        total = sum(extra.values())
        for k, w in enumerate(names):
            for sp in spell_of(w):
                if sp not in spelled and sp not in other:
                    add(sp)
                    other[sp] = k
        most = max(map(len, spelled.values()), default=1)
        v = len(pieces)
        starts = [i != BLANK_ID and p.startswith(SPACE) for i, p in enumerate(pieces)]
        start_node = [nodes.get(p[len(SPACE):], DEAD) if s else DEAD
                      for p, s in zip(pieces, starts, strict=True)]
        cont: dict[str, list[int]] = {}
        for i, p in enumerate(pieces):
            if i != BLANK_ID and not starts[i] and p:
                cont.setdefault(p, []).append(i)
        longest = max(map(len, cont), default=0)
        first = 0 if spell is None else 1  # the shortest prefix a continuing piece extends
        edges = sorted((nodes[s[:i]] * v + k, n) for s, n in nodes.items()  # s[:i] + piece = s
                       for i in range(max(first, len(s) - longest), len(s))
                       for k in cont.get(s[i:], ()))
        keys, child = zip(*edges, strict=True) if edges else ((), ())
        keys, child = torch.tensor(keys, dtype=torch.int64), torch.tensor(child, dtype=torch.int64)
        dense = None
        if (len(nodes) + 1) * v <= cls.DENSE_MAX:  # one gather per lookup instead of a search
            dense = torch.full(((len(nodes) + 1) * v,), DEAD, dtype=torch.int32)
            dense[keys + v] = child.to(torch.int32)  # row 0 is DEAD's
        alts = tuple(torch.tensor([spelled[s][h] if len(spelled.get(s, ())) > h else -1
                                   for s in nodes]) for h in range(1, most))
        share = [math.log(extra[w] / total) for w in names]  # ln P(word | <unk>)
        ahead = None
        if names:  # from the longest spellings up: a node's best word below it
            best = dict.fromkeys(nodes, NEG_INF)
            for sp_, k in other.items():
                best[sp_] = share[k]
            for sp_ in spelled:
                best[sp_] = math.inf
            for s in sorted(nodes, key=len, reverse=True)[:-1]:
                if best[s] > best[s[:-1]]:
                    best[s[:-1]] = best[s]
            ahead = torch.tensor(list(best.values()), dtype=torch.float64)
        return cls(torch.tensor(starts), torch.tensor(start_node), keys, child,
                   torch.tensor([spelled[s][0] if s in spelled else tables.unk for s in nodes]),
                   torch.tensor([s in spelled for s in nodes]),
                   torch.tensor([len(p) - s if i != BLANK_ID else 0
                                 for i, (p, s) in enumerate(zip(pieces, starts, strict=True))]),
                   dense, alts,
                   torch.tensor([other.get(s, -1) for s in nodes]) if names else None, names,
                   torch.tensor(share, dtype=torch.float64) if names else None, ahead)

    def to(self, device: torch.device) -> Spelling:
        return Spelling(*(None if getattr(self, f) is None else getattr(self, f).to(device)
                          for f in ("starts", "start_node", "keys", "child", "word", "is_word",
                                    "length", "dense")), tuple(a.to(device) for a in self.alts),
                        None if self.extra is None else self.extra.to(device), self.names,
                        *(None if x is None else x.to(device)
                          for x in (self.extra_logp, self.ahead)))

    def step(self, node: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """The node after appending ``token`` (which does not start a word) to ``node``."""
        if self.dense is not None:
            return lookup(self.dense, (node + 1) * len(self.starts) + token).long()
        if not len(self.keys):
            return torch.full_like(node + token, DEAD)
        key = node * len(self.starts) + token  # DEAD nodes give negative keys: no match
        pos = torch.searchsorted(self.keys, key).clamp_(max=len(self.keys) - 1)
        return torch.where(lookup(self.keys, pos) == key, lookup(self.child, pos), DEAD)


@dataclass(frozen=True)
class LMFusion:
    lm: NGramLM
    pieces: Sequence[str]  # token id -> piece (``tokenizer.id_to_piece``)
    weight: float = 0.5
    word_bonus: float = 0.0
    unk_penalty: float = 0.0  # added for each word the LM does not know (<= 0)
    spell: Callable[[str], list[str]] | None = None  # word -> spellings in the pieces' alphabet
    extra: Mapping[str, float] | None = None  # word -> count: words outside the LM that the
    # search may spell too (open vocabulary)

    @property
    def dead_penalty(self) -> float:
        """Added for a spelling that is no word: ``unk_penalty``, or with an open vocabulary
        (every word is in the trie) -inf."""
        return NEG_INF if self.extra else self.unk_penalty

    @cached_property
    def _tables(self) -> dict[torch.device, tuple[LMTables, Spelling]]:
        return {}

    def tables(self, device: torch.device) -> tuple[LMTables, Spelling]:
        """The LM and spelling tables on ``device`` (built once per device)."""
        if device not in self._tables:
            lm = self.lm.tables
            self._tables[device] = (lm.to(device), Spelling.build(
                lm, self.pieces, self.spell, self.extra).to(device))
        return self._tables[device]

    def pick(self, node: torch.Tensor, state: torch.Tensor, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The word the spelling ``node`` closes (of homophones, the one the LM likes best
        after ``state``; ``unk`` where none), its LM log-prob and the state after it."""
        lm, sp = self.tables(device)
        at = node.clamp(min=0)
        word = torch.where(node == DEAD, lm.unk, lookup(sp.word, at))
        logp, after = lm.score(state, word)
        for alts in sp.alts:
            alt = torch.where(node == DEAD, -1, lookup(alts, at))
            alp, aft = lm.score(state, alt.clamp(min=0))
            better = (alt >= 0) & (alp > logp)
            word, logp, after = (torch.where(better, alt, word), torch.where(better, alp, logp),
                                 torch.where(better, aft, after))
        return word, logp, after

    def close(self, node: torch.Tensor, state: torch.Tensor, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score of closing the word being spelled (weighted LM + bonus + OOV penalty; 0 where
        nothing is spelled) and the LM state after it."""
        _, sp = self.tables(device)
        at = node.clamp(min=0)
        _, logp, after = self.pick(node, state, device)
        known = (node != DEAD) & lookup(sp.is_word, at)
        score = self.weight * logp + self.word_bonus
        other = score + self.dead_penalty
        if sp.extra is not None:  # a word outside the LM: of the <unk> class, + the penalty
            k = torch.where(node != DEAD, lookup(sp.extra, at), -1)
            share = lookup(sp.extra_logp, k.clamp(min=0))
            other = torch.where(k >= 0, score + self.weight * share + self.unk_penalty, other)
        score = torch.where(known, score, other)
        spelled = node != 0
        return torch.where(spelled, score, 0.0), torch.where(spelled, after, state)

    def words(self, tokens: Sequence[int]) -> str:
        """The words a hypothesis of a phone model spells, chosen among homophones as the
        search scored them (``<unk>`` for a spelling no LM word has)."""
        cpu = torch.device("cpu")
        lm, sp = self.tables(cpu)
        names = {i: w for w, i in lm.words.items()}
        state, node, out = torch.tensor(lm.start), None, []
        for t in [*tokens, None]:
            if t is None or bool(sp.starts[t]):
                if node is not None:
                    word, _, state = self.pick(node, state, cpu)
                    k = -1 if sp.extra is None or int(node) == DEAD else int(sp.extra[node])
                    out.append(UNK if int(node) == DEAD else sp.names[k] if k >= 0
                               else names.get(int(word), UNK))
                node = None if t is None else sp.start_node[t]
            else:  # (a hypothesis that does not begin with a word start: <unk>)
                node = sp.step(node, torch.tensor(t)) if node is not None \
                    else torch.tensor(DEAD)
        return " ".join(out)

    def oov(self, node: torch.Tensor, spelt: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Ranking term of the word being spelled, ``node``, ``spelt`` characters so far: for
        a beginning no word has, the penalty times its length beyond ``LONG_WORD``; for one
        only extra words have (open vocabulary), the best they can get (LM look-ahead)."""
        _, sp = self.tables(device)
        out = torch.where(node == DEAD, self.dead_penalty * (
            spelt.to(torch.float64) / LONG_WORD).clamp(min=1.0), 0.0)
        if sp.ahead is not None:
            best = lookup(sp.ahead, node.clamp(min=0))
            out = torch.where((node != DEAD) & torch.isfinite(best),
                              self.weight * best + self.unk_penalty, out)
        return out

    def end(self, state: torch.Tensor, device: torch.device) -> torch.Tensor:
        lm, _ = self.tables(device)
        return self.weight * lm.score(state, torch.full_like(state, lm.words[EOS]))[0]


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

    EMPTY = {"pb": NEG_INF, "pnb": NEG_INF, "last": -1}  # fill of new slots; the rest 0

    @classmethod
    def start(cls, b: int, lm_state: int, device: torch.device) -> _Beams:
        f, i = dict(dtype=torch.float64, device=device), dict(dtype=torch.int64, device=device)
        z, zi = torch.zeros((b, 1), **f), torch.zeros((b, 1), **i)
        return cls(z, z - math.inf, z, z, zi - 1, zi, zi, zi, zi + lm_state, zi, zi)

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
) -> list[list[Hypothesis]]:
    """``log_probs [B, T, V]``, ``lengths [B]`` -> for each utterance its ``nbest`` best."""
    if log_probs.shape[0] == 0:
        return []
    search = BeamSearch(log_probs.shape[0], beam, topk, prune, fusion, beam_prune, recombine,
                        log_probs.device)
    search.advance(log_probs, lengths)
    return search.best(nbest)


class BeamSearch:
    """The prefix beam search of a batch, frame-synchronous: ``advance`` with each chunk of
    log-probs as it comes (a stream), ``best`` at any time. Fed in chunks it gives the result of
    one ``prefix_beam_search`` over the whole (the sums of skipped blank frames are grouped
    differently: equal to float64 rounding)."""

    def __init__(self, batch: int, beam: int = 10, topk: int = 0, prune: float = math.inf,
                 fusion: LMFusion | None = None, beam_prune: float = math.inf,
                 recombine: bool = True, device: torch.device | str = "cpu") -> None:
        self.beam, self.topk, self.prune, self.fusion = beam, topk, prune, fusion
        self.beam_prune, self.recombine, self.device = beam_prune, recombine, torch.device(device)
        self.beams = _Beams.start(batch, fusion.tables(self.device)[0].start if fusion else 0,
                                  self.device)
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
                                     self.fusion, self.beam_prune, self.recombine)
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
        if self.fusion is not None:
            closed, closed_state = self.fusion.close(beams.node, beams.state, dev)
            score = score + closed + self.fusion.end(closed_state, dev)
        frames = torch.cat(self.frames, 1) if self.frames else \
            torch.zeros(beams.pb.shape[0], 0, dtype=torch.int64, device=dev)
        return _nbest(score, beams.ctc > NEG_INF, self.parents, self.emitted, frames, nbest)


def _step(beams: _Beams, lp: torch.Tensor, cand: torch.Tensor, tok: torch.Tensor,
          fusion: LMFusion | None, beam_prune: float, recombine: bool
          ) -> tuple[_Beams, torch.Tensor, torch.Tensor]:
    """One frame: ``lp [B, V]`` log-probs, ``tok [B, W]`` the tokens that may make new
    prefixes and ``cand`` their log-probs (best first; -inf: none) -> the new beams (without
    those more than ``beam_prune`` below the best), each slot's parent slot, and the label each
    slot appended (-1: none).

    The extensions are scored only for the tokens a row really has, ``M`` of them in all
    (``[M, K]``, not ``[B, K, W]``: W is the batch's widest row, on average 4-6 times a row's
    width), and scattered into the ``[B, K + K * W]`` ranking just before the ``topk``."""
    bm = beams
    b, k = bm.pb.shape
    w = tok.shape[1]
    total = bm.ctc
    valid = total > NEG_INF
    lastc = bm.last.clamp(min=0)
    last_lp = lp.gather(1, lastc)
    stay_pb = total + lp[:, BLANK_ID, None]
    stay_pnb = torch.where(bm.last >= 0, bm.pnb + last_lp, NEG_INF)  # merged repeat
    some = cand > NEG_INF  # a row's tokens are its columns 0 .. width - 1
    row, col = some.nonzero(as_tuple=True)  # [M]: the candidate tokens, row by row
    width = some.sum(1)
    first = width.cumsum(0) - width  # the index in M of each row's column 0
    c_tok, c_lp = tok[row, col], cand[row, col]

    def at_row(x: torch.Tensor) -> torch.Tensor:  # [B, K] -> [M, K]: the row of each token
        return x.index_select(0, row)

    same = c_tok[:, None] == at_row(bm.last)  # [M, K]: the token repeats the prefix's last label
    ext = torch.where(same, at_row(bm.pb), at_row(total)) + c_lp[:, None]
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
    stay = torch.logaddexp(stay_pb, stay_pnb)
    closing = False
    if fusion is None:
        kept_score, ext_score = stay, ext
    else:  # candidate scores with the LM terms of the words they close and the OOV ranking
        _, sp = fusion.tables(lp.device)
        starts = lookup(sp.starts, c_tok)[:, None]  # [M, 1]
        closing = bool(starts.any())  # a word can close at this frame (else: no LM lookup)
        add = at_row(bm.lm)
        if closing:
            closed, closed_state = fusion.close(bm.node, bm.state, lp.device)
            add = add + torch.where(starts, at_row(closed), 0.0)
        if fusion.dead_penalty:  # (a ranking term for the word being spelled; else it is 0)
            node = torch.where(starts, lookup(sp.start_node, c_tok)[:, None],
                               sp.step(at_row(bm.node), c_tok[:, None]))
            spelt = lookup(sp.length, c_tok)[:, None] + torch.where(starts, 0, at_row(bm.spelt))
            add = add + fusion.oov(node, spelt, lp.device)
        kept_score, ext_score = stay + bm.lm + bm.oov, ext + add
        if NEG_INF in (fusion.unk_penalty, fusion.dead_penalty):  # real prefixes an infinite
            # penalty ruled out: last
            kept_score, ext_score = _rank_ruled_out(kept_score, stay), _rank_ruled_out(ext_score,
                                                                                       ext)
    score = torch.full((b, k + k * w), NEG_INF, dtype=ext.dtype, device=ext.device)
    score[:, :k] = kept_score
    score[:, k:].view(b, k, w)[row, :, col] = ext_score
    top, sel = score.topk(k, dim=1)  # [B, K], best first
    kept = sel < k  # the slot's prefix stayed; else it is an extension
    e = (sel - k).clamp(min=0)
    a, j = e // w, e % w
    parent = torch.where(kept, sel, a)
    new = tok.gather(1, j)
    real = ~kept & (j < width[:, None])  # else a -inf filler the topk had to take
    ext_pnb = F.pad(ext.view(-1), (0, 1), value=NEG_INF)  # [M * K + 1]: the last is -inf
    ext_pnb = ext_pnb[torch.where(real, (first[:, None] + j) * k + a, len(ext_pnb) - 1)]
    hp = bm.h.gather(1, parent)
    nxt = _Beams(pb=torch.where(kept, stay_pb.gather(1, parent), NEG_INF),
                 pnb=torch.where(kept, stay_pnb.gather(1, parent), ext_pnb),
                 lm=bm.lm.gather(1, parent), oov=bm.oov.gather(1, parent),
                 last=torch.where(kept, bm.last.gather(1, parent), new),
                 h=torch.where(kept, hp, hp * _HASH + new + 1),
                 ph=torch.where(kept, bm.ph.gather(1, parent), hp),
                 node=bm.node.gather(1, parent), state=bm.state.gather(1, parent),
                 spelt=bm.spelt.gather(1, parent), wh=bm.wh.gather(1, parent))
    if math.isfinite(beam_prune):  # too far below the best: the slot is emptied
        cut = top < top[:, :1] - beam_prune
        nxt.pb, nxt.pnb = nxt.pb.masked_fill(cut, NEG_INF), nxt.pnb.masked_fill(cut, NEG_INF)
    if fusion is not None:
        opens = lookup(sp.starts, new)
        if closing:
            word = opens & ~kept  # the extension closed its parent's word
            nxt.lm = torch.where(word, nxt.lm + closed.gather(1, parent), nxt.lm)
            nxt.state = torch.where(word, closed_state.gather(1, parent), nxt.state)
        grown = torch.where(opens, lookup(sp.start_node, new), sp.step(nxt.node, new))
        nxt.node = torch.where(kept, nxt.node, grown)
        spelt = lookup(sp.length, new) + torch.where(opens, 0, nxt.spelt)
        nxt.spelt = torch.where(kept, nxt.spelt, spelt)
        nxt.oov = fusion.oov(nxt.node, nxt.spelt, lp.device)
        nxt.wh = torch.where(kept, nxt.wh, torch.where(opens, 0, nxt.wh) * _HASH + new + 1)
        if recombine:  # of prefixes the LM cannot tell apart from here on, keep the best
            key = (nxt.state * _MIX[0] + nxt.wh) * _MIX[1] + nxt.last
            live = nxt.ctc > NEG_INF
            before = torch.ones(k, k, dtype=torch.bool, device=key.device).tril(-1)  # j < i
            dup = ((key[:, :, None] == key[:, None, :]) & before & live[:, None, :]).any(2)
            nxt.pb = nxt.pb.masked_fill(dup, NEG_INF)
            nxt.pnb = nxt.pnb.masked_fill(dup, NEG_INF)
    return nxt, parent, torch.where(kept, -1, new)


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
