"""Word n-gram language models: ARPA files and interpolated modified Kneser-Ney estimation.

:class:`NGramLM` reads any ARPA file (ours, KenLM's ``lmplz``, SRILM's) and answers
``log_prob(context, word)`` (natural log) with the usual back-off rule
``P(w | h) = P*(h w)`` if the n-gram is listed, else ``bow(h) * P(w | h minus its first word)``.
Words outside the vocabulary are ``<unk>``.

:func:`train_kneser_ney` estimates an interpolated modified Kneser-Ney model (Chen & Goodman
1998, the smoothing of KenLM's lmplz): the highest order uses counts, lower orders use
continuation counts (how many different words precede the n-gram; n-grams starting with ``<s>``
keep their counts), three discounts per order from the counts of counts, unigrams interpolated
with the uniform distribution over the vocabulary (which includes ``</s>`` and ``<unk>``).
Interpolated KN is exactly a back-off model whose back-off weight is the interpolation weight
``gamma(h)``, so the ARPA file written holds the same distribution.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from ctcasr.errors import CtcasrError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LOG10 = math.log(10.0)
NO_PROB = -99.0  # log10 "probability" ARPA files give <s>

Gram = tuple[str, ...]


class NGramLM:
    """A back-off n-gram model (log10 tables as in ARPA)."""

    def __init__(self, probs: list[dict[Gram, float]], bows: list[dict[Gram, float]]) -> None:
        self.probs = probs  # probs[n-1][ngram] = log10 P
        self.bows = bows  # bows[n-1][ngram] = log10 back-off weight
        self.order = len(probs)
        self.vocab = {g[0] for g in probs[0]}
        if UNK not in self.vocab:
            self.probs[0][(UNK,)] = NO_PROB  # an LM without <unk> gives unknown words ~0
            self.vocab.add(UNK)
        self._cache: dict[Gram, float] = {}
        self.source: str | None = None  # the ARPA text it was read from

    def log_prob(self, context: Sequence[str], word: str) -> float:
        """Natural-log ``P(word | context)``; only the last ``order - 1`` context words count."""
        ctx = tuple(w if w in self.vocab else UNK for w in context)[-(self.order - 1):] \
            if self.order > 1 else ()
        key = (*ctx, word if word in self.vocab else UNK)
        p = self._cache.get(key)
        if p is None:
            p = self._log10(key) * LOG10
            self._cache[key] = p
        return p

    @cached_property
    def tables(self) -> LMTables:
        """The model as integer tables for vectorised scoring (built once)."""
        return LMTables.build(self)

    def _log10(self, gram: Gram) -> float:
        bow = 0.0
        while True:
            p = self.probs[len(gram) - 1].get(gram)
            if p is not None:
                return bow + p
            if len(gram) == 1:
                return bow + NO_PROB
            bow += self.bows[len(gram) - 2].get(gram[:-1], 0.0)
            gram = gram[1:]

    # ------------------------------------------------------------------ ARPA I/O
    @classmethod
    def read_arpa(cls, path: str | Path) -> NGramLM:
        return cls.from_arpa(read_arpa_text(path), str(path))

    @classmethod
    def from_arpa(cls, text: str, path: str = "<ARPA>") -> NGramLM:
        """The model in ARPA ``text``; errors name ``path`` and the line."""
        lines = text.splitlines()
        counts: dict[int, int] = {}
        probs: list[dict[Gram, float]] = []
        bows: list[dict[Gram, float]] = []
        n = 0
        for lineno, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line:
                continue
            if line == "\\data\\":
                continue
            if line.startswith("ngram ") and not probs:
                k, _, v = line[6:].partition("=")
                counts[int(k)] = int(v)
                continue
            if line.startswith("\\") and line.endswith("-grams:"):
                n = int(line[1:].split("-")[0])
                while len(probs) < n:
                    probs.append({})
                    bows.append({})
                continue
            if line == "\\end\\":
                break
            if n == 0:
                raise CtcasrError(f"{path}:{lineno}: not an ARPA file (no \\data\\ header)")
            parts = line.split()
            if len(parts) not in (n + 1, n + 2):
                raise CtcasrError(f"{path}:{lineno}: expected a {n}-gram line, got {raw!r}")
            try:
                gram = tuple(parts[1 : n + 1])
                probs[n - 1][gram] = float(parts[0])
                if len(parts) == n + 2:
                    bows[n - 1][gram] = float(parts[-1])
            except ValueError:
                raise CtcasrError(f"{path}:{lineno}: bad number in {raw!r}") from None
        if not probs:
            raise CtcasrError(f"{path}: no n-grams found (not an ARPA file?)")
        for k, c in counts.items():
            if k <= len(probs) and len(probs[k - 1]) != c:
                raise CtcasrError(f"{path}: header says {c} {k}-grams, found {len(probs[k - 1])}")
        lm = cls(probs, bows)
        lm.source = text
        return lm

    def write_arpa(self, path: str | Path) -> None:
        Path(path).write_text(self.arpa(), encoding="utf-8")

    def arpa(self) -> str:
        """The model as ARPA text: the text it was read from, else written afresh."""
        if self.source is not None:
            return self.source
        out = ["\\data\\\n"]
        out += [f"ngram {n}={len(table)}\n" for n, table in enumerate(self.probs, 1)]
        for n, table in enumerate(self.probs, 1):
            out.append(f"\n\\{n}-grams:\n")
            for gram in sorted(table):
                line = f"{table[gram]:.6f}\t{' '.join(gram)}"
                if n < self.order and gram in self.bows[n - 1]:
                    line += f"\t{self.bows[n - 1][gram]:.6f}"
                out.append(line + "\n")
        out.append("\n\\end\\\n")
        return "".join(out)


def read_arpa_text(path: str | Path) -> str:
    """An ARPA file's text (errors name the file)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise CtcasrError(f"{path}: cannot read LM: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CtcasrError(f"{path}: not a text ARPA file (binary KenLM models are not read; "
                          "convert with kenlm's build_binary or use the .arpa)") from None


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 1-D ``table``: the same values as advanced indexing, with one
    ``index_select`` (faster on the CPU for the beam search's ``[M, K]`` lookups)."""
    return table.index_select(0, index.reshape(-1)).view(index.shape)


@dataclass
class LMTables:
    """An :class:`NGramLM` as sorted integer tables, scored for many hypotheses at once (on
    whatever device the tensors are moved to).

    A hypothesis's LM state is the id of its context, KenLM style: the longest suffix of its
    last ``order - 1`` words that is a listed n-gram (or the prefix of one); the empty context is
    state 0. ``P(w | state)`` is the listed n-gram ``state w`` if there is one, else the state's
    back-off weight times ``P(w | backoff[state])``: the ARPA rule, so :meth:`score` equals
    :meth:`NGramLM.log_prob` (tests check it).
    """

    words: dict[str, int]  # word -> id; unknown words are ``unk``
    unk: int
    start: int  # the state after <s>
    keys: torch.Tensor  # [E] int64, sorted: state * num_words + word, one per listed n-gram
    logp: torch.Tensor  # [E] float64, natural log of the n-gram's probability
    next: torch.Tensor  # [E] int64, the state after the n-gram
    bow: torch.Tensor  # [S] float64, natural-log back-off weight of each state
    backoff: torch.Tensor  # [S] int64, the state one word shorter
    order: int

    @classmethod
    def build(cls, lm: NGramLM) -> LMTables:
        words = {w: i for i, w in enumerate(sorted(lm.vocab))}
        contexts: set[Gram] = {()}
        for n, table in enumerate(lm.probs, 1):
            for gram in table:
                contexts.update(gram[:i] for i in range(1, n))
                if n < lm.order:
                    contexts.add(gram)
        ids = {g: i for i, g in enumerate(sorted(contexts, key=lambda g: (len(g), g)))}

        def state(gram: Gram) -> int:  # the longest suffix that is a context
            gram = gram[max(0, len(gram) - lm.order + 1):]
            while gram not in ids:
                gram = gram[1:]
            return ids[gram]

        bow = torch.zeros(len(ids), dtype=torch.float64)
        backoff = torch.zeros(len(ids), dtype=torch.int64)
        for g, i in ids.items():
            if g:
                bow[i] = lm.bows[len(g) - 1].get(g, 0.0) * LOG10
                backoff[i] = state(g[1:])
        entries = sorted((ids[g[:-1]] * len(words) + words[g[-1]], p * LOG10, state(g))
                         for table in lm.probs for g, p in table.items())
        keys, logp, nxt = zip(*entries, strict=True)
        return cls(words, words[UNK], state((BOS,)), torch.tensor(keys), torch.tensor(logp,
                   dtype=torch.float64), torch.tensor(nxt), bow, backoff, lm.order)

    def to(self, device: torch.device) -> LMTables:
        return LMTables(self.words, self.unk, self.start, self.keys.to(device),
                        self.logp.to(device), self.next.to(device), self.bow.to(device),
                        self.backoff.to(device), self.order)

    def score(self, state: torch.Tensor, word: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Natural-log ``P(word | state)`` and the state after ``word``, elementwise."""
        total = torch.zeros(state.shape, dtype=torch.float64, device=state.device)
        after = torch.zeros_like(state)
        done = torch.zeros(state.shape, dtype=torch.bool, device=state.device)
        for _ in range(self.order):  # at most order - 1 back-offs reach the unigrams
            key = state * len(self.words) + word
            pos = torch.searchsorted(self.keys, key).clamp_(max=len(self.keys) - 1)
            hit = ~done & (lookup(self.keys, pos) == key)
            total = torch.where(hit, total + lookup(self.logp, pos), total)
            after = torch.where(hit, lookup(self.next, pos), after)
            miss = ~done & ~hit
            total = torch.where(miss, total + lookup(self.bow, state), total)
            state = torch.where(miss, lookup(self.backoff, state), state)
            done |= hit
            if state.device.type == "cpu" and bool(done.all()):
                break
        return total, after


def train_kneser_ney(sentences: Iterable[str], order: int = 3) -> NGramLM:
    """Estimate an interpolated modified Kneser-Ney model from whitespace-tokenised sentences."""
    if order < 1:
        raise CtcasrError(f"LM order must be >= 1, got {order}")
    raw: list[dict[Gram, int]] = [defaultdict(int) for _ in range(order)]
    n_sent = 0
    for s in sentences:
        words = [BOS, *s.split(), EOS]
        n_sent += 1
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                gram = tuple(words[i : i + n])
                if gram != (BOS,):
                    raw[n - 1][gram] += 1
    if n_sent == 0:
        raise CtcasrError("no sentences to train an LM on")
    # Adjusted counts: raw counts at the top order and for n-grams starting with <s>,
    # continuation counts (distinct left neighbours) elsewhere.
    adj: list[dict[Gram, int]] = [dict(raw[order - 1])]
    for n in range(order - 1, 0, -1):
        cont: dict[Gram, int] = defaultdict(int)
        for gram in raw[n]:  # (n+1)-grams
            cont[gram[1:]] += 1
        table = {g: (c if g[0] == BOS else cont.get(g, 0)) for g, c in raw[n - 1].items()}
        adj.insert(0, {g: c for g, c in table.items() if c > 0})
    vocab = sorted({g[0] for g in raw[0]} | {UNK} - {BOS})
    probs: list[dict[Gram, float]] = [{} for _ in range(order)]
    bows: list[dict[Gram, float]] = [{} for _ in range(order)]
    lower: dict[Gram, float] = {(w,): 1.0 / len(vocab) for w in vocab}  # the uniform "0-gram"
    for n in range(1, order + 1):
        d = _discounts(adj[n - 1])
        by_ctx: dict[Gram, list[tuple[str, int]]] = defaultdict(list)
        for gram, c in adj[n - 1].items():
            by_ctx[gram[:-1]].append((gram[-1], c))
        cur: dict[Gram, float] = {}
        for ctx, items in by_ctx.items():
            total = sum(c for _, c in items)
            nk = [sum(1 for _, c in items if min(c, 3) == k) for k in (1, 2, 3)]
            gamma = sum(dk * m for dk, m in zip(d, nk, strict=True)) / total
            for w, c in items:
                # (h' w) is always listed one order down: the n-gram's suffix occurs in the text
                low = lower[(*ctx[1:], w)]
                cur[(*ctx, w)] = (c - d[min(c, 3) - 1]) / total + gamma * low
            if n > 1:
                bows[n - 2][ctx] = math.log10(gamma) if gamma > 0 else NO_PROB
            else:
                for w in vocab:  # unigrams: every vocabulary word gets the uniform share
                    cur.setdefault((w,), gamma / len(vocab))
        probs[n - 1] = {g: math.log10(p) for g, p in cur.items()}
        lower = cur
    probs[0][(BOS,)] = NO_PROB
    return NGramLM(probs, bows)


def _discounts(counts: dict[Gram, int]) -> tuple[float, float, float]:
    """Modified KN discounts D1, D2, D3+ from the counts of counts (Chen & Goodman eq. 26)."""
    nk = [0, 0, 0, 0]
    for c in counts.values():
        if c <= 4:
            nk[c - 1] += 1
    n1, n2, n3, n4 = nk
    if min(n1, n2, n3, n4) == 0:  # too little data for the estimate: a common fixed discount
        return (0.5, 1.0, 1.5)
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    return tuple(min(max(dk, 0.05), k - 0.05) for k, dk in enumerate(d, 1))  # type: ignore
