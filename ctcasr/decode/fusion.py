"""Shallow fusion of a word n-gram LM into the CTC prefix beam search (:mod:`ctcasr.decode.beam`).

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

from ctcasr.lm.ngram import EOS, UNK, LMTables, NGramLM, lookup
from ctcasr.tokenizer import BLANK_ID, SPACE

NEG_INF = -math.inf
DEAD = -1  # trie node of a partial word that no LM word begins with
LONG_WORD = 6  # characters: a beginning no LM word has is ranked down in proportion to its
# length beyond this (pyctcdecode's AVG_TOKEN_LEN), so long runs of letters without a space go


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
    free: torch.Tensor | None = None  # [len(names)] bool: an extra word closed without the OOV
    # penalty or a share (a hotword the LM lacks)

    DENSE_MAX = 1 << 24  # entries (64 MB): a character or 1000-piece vocabulary over ~10k words

    @classmethod
    def build(cls, tables: LMTables, pieces: Sequence[str], spell=None,
              extra: Mapping[str, float] | None = None,
              free: Sequence[str] = ()) -> Spelling:
        """``spell``: word -> its spellings in the alphabet of ``pieces`` (default: itself);
        given (a phone model), every word begins with a word-start token: nothing continues
        the empty spelling (characters: the first word has no ``▁`` before it). ``extra``:
        word -> count, words outside the LM that the trie spells too (where no LM word has the
        spelling); ``free``: more such words, closed without the OOV penalty (hotwords)."""
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
        names += tuple(sorted({w for w in free if w not in tables.words and w not in extra}))
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
        share = [math.log(extra[w] / total) if w in extra else 0.0 for w in names]
        ahead = None
        if names:  # from the longest spellings up: a node's best word below it
            best = dict.fromkeys(nodes, NEG_INF)
            for sp_, k in other.items():
                best[sp_] = share[k] if names[k] in extra else math.inf
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
                   torch.tensor(share, dtype=torch.float64) if names else None, ahead,
                   torch.tensor([w not in extra for w in names]) if names else None)

    def to(self, device: torch.device) -> Spelling:
        return Spelling(*(None if getattr(self, f) is None else getattr(self, f).to(device)
                          for f in ("starts", "start_node", "keys", "child", "word", "is_word",
                                    "length", "dense")), tuple(a.to(device) for a in self.alts),
                        None if self.extra is None else self.extra.to(device), self.names,
                        *(None if x is None else x.to(device)
                          for x in (self.extra_logp, self.ahead, self.free)))

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
    free: tuple[str, ...] = ()  # words outside the LM the search may spell without the OOV
    # penalty (the words of hotwords)

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
                lm, self.pieces, self.spell, self.extra, self.free).to(device))
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
            penalty = torch.where(lookup(sp.free, k.clamp(min=0)), 0.0, self.unk_penalty)
            other = torch.where(k >= 0, score + self.weight * share + penalty, other)
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
