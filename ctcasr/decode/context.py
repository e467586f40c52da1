"""Hotwords (contextual biasing): a list of words or phrases the search should prefer.

Each phrase is spelled with the model's tokens (characters, SentencePiece pieces, or phones
through the lexicon: :meth:`ctcasr.tokenizer.Tokenizer.encode`, so a word the lexicon lacks is
pronounced by the guesser) and put in an Aho-Corasick automaton over tokens
(:class:`ContextGraph`). A hypothesis carries its state in the automaton; appending a token
moves it (following failure links where the phrase being matched breaks off) and changes the
hypothesis's score by

    ``delta = boost x (depth(new) - depth(old)) + completed(new)``

where ``depth`` is how many tokens of a phrase are matched so far (a partial match is ranked
with its tokens' bonus already, which goes away when the match fails) and ``completed`` is the
bonus ``boost x length`` of every phrase that ends at this token (several, when phrases end in
one another). At the end of the utterance the partial bonus is taken back, so a hypothesis's
final score holds ``boost x length`` for each phrase occurrence in it and nothing for a
partial one: ``B(y) = sum over occurrences of listed phrases in y of their boost x length``.

Hotwords files: one phrase per line, optionally followed by its own boost per token after a
tab or ``:`` (``new york:3.5``); ``#`` starts a comment.

Character models have no word-start token at the beginning of a hypothesis, so the automaton
starts as if a word boundary had just been read: a phrase ``▁new▁york`` matches at the start of
an utterance as it does after a space.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ctcasr.errors import CtcasrError, read_lines
from ctcasr.lm.ngram import lookup
from ctcasr.tokenizer import SPACE, CharTokenizer, Tokenizer

DEFAULT_BOOST = 2.0  # per token of a phrase


@dataclass(frozen=True)
class Hotword:
    phrase: str
    boost: float = DEFAULT_BOOST


def read_hotwords(path: str | Path, default_boost: float = DEFAULT_BOOST) -> list[Hotword]:
    """A hotwords file (module doc); errors name the file and line."""
    out = []
    for n, line in enumerate(read_lines(path, "hotwords list"), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        phrase, boost = body, default_boost
        for sep in ("\t", ":"):
            if sep in body:
                phrase, _, value = body.rpartition(sep)
                try:
                    boost = float(value)
                except ValueError:
                    raise CtcasrError(f"{path}:{n}: the boost of {phrase.strip()!r} must be a "
                                      f"number, not {value.strip()!r}") from None
                break
        phrase = " ".join(phrase.lower().split())
        if not phrase or not boost > 0 or boost == float("inf"):
            raise CtcasrError(f"{path}:{n}: expected 'phrase[:boost]' with a positive finite "
                              f"boost, got {line.strip()!r}")
        out.append(Hotword(phrase, boost))
    if not out:
        raise CtcasrError(f"{path}: hotwords list has no phrases")
    return out


@dataclass
class ContextGraph:
    """The automaton as tensors: node 0 is the root; ``keys`` (sorted ``node * V + token``) ->
    ``child`` for every transition that does not lead back to the root (failure links already
    followed); ``partial[n]`` the bonus of the tokens matched at ``n``, ``completed[n]`` that
    of the phrases ending at ``n``."""

    vocab: int
    keys: torch.Tensor
    child: torch.Tensor
    partial: torch.Tensor  # [N] float64
    completed: torch.Tensor  # [N] float64
    start: int  # the state of an empty hypothesis

    @classmethod
    def build(cls, hotwords: Sequence[Hotword], tokenizer: Tokenizer) -> ContextGraph:
        """Phrases spelled with ``tokenizer``; a phrase it cannot spell is an error naming it."""
        spelled = []
        for h in hotwords:
            try:
                ids = tokenizer.encode(h.phrase)
            except (ValueError, KeyError) as e:
                raise CtcasrError(f"hotword {h.phrase!r}: the model cannot spell it ({e})") \
                    from None
            if isinstance(tokenizer, CharTokenizer):  # a phrase is whole words: ▁ before it
                ids = [tokenizer.index[SPACE], *ids] if SPACE in tokenizer.index else ids
            if ids:
                spelled.append((ids, h.boost))
        return cls.from_token_phrases(spelled, tokenizer.vocab_size, _start_token(tokenizer))

    @classmethod
    def from_token_phrases(cls, phrases: Sequence[tuple[Sequence[int], float]], vocab: int,
                           start_token: int | None = None) -> ContextGraph:
        """The automaton of token sequences with their boost per token."""
        nxt: list[dict[int, int]] = [{}]
        partial, own = [0.0], [0.0]
        for ids, boost in phrases:
            node = 0
            for t in ids:
                if t not in nxt[node]:
                    nxt[node][t] = len(nxt)
                    nxt.append({})
                    partial.append(partial[node] + boost)
                    own.append(0.0)
                node = nxt[node][t]
            own[node] = max(own[node], boost * len(ids))  # the same phrase twice: once
        fail, completed = [0] * len(nxt), own[:]
        order = deque(nxt[0].values())
        while order:  # breadth first: a node's failure target is done before the node
            node = order.popleft()
            completed[node] = own[node] + completed[fail[node]]
            for t, c in nxt[node].items():
                f = fail[node]
                while f and t not in nxt[f]:
                    f = fail[f]
                fail[c] = nxt[f][t] if t in nxt[f] and nxt[f][t] != c else 0
                order.append(c)
        tokens = sorted({t for d in nxt for t in d})
        edges = {}
        for node in range(len(nxt)):
            for t in tokens:
                f = node
                while f and t not in nxt[f]:
                    f = fail[f]
                to = nxt[f].get(t, 0)
                if to:
                    edges[node * vocab + t] = to
        keys = sorted(edges)
        start = edges.get(start_token, 0) if start_token is not None else 0
        return cls(vocab, torch.tensor(keys, dtype=torch.int64),
                   torch.tensor([edges[k] for k in keys], dtype=torch.int64),
                   torch.tensor(partial, dtype=torch.float64),
                   torch.tensor(completed, dtype=torch.float64), start)

    def to(self, device: torch.device) -> ContextGraph:
        return ContextGraph(self.vocab, self.keys.to(device), self.child.to(device),
                            self.partial.to(device), self.completed.to(device), self.start)

    def step(self, state: torch.Tensor, token: torch.Tensor) -> tuple[torch.Tensor,
                                                                      torch.Tensor]:
        """The states after appending ``token`` (broadcast with ``state``), and the score
        change: the partial bonus's change plus the phrases completed."""
        key = state * self.vocab + token
        if len(self.keys):
            pos = torch.searchsorted(self.keys, key).clamp_(max=len(self.keys) - 1)
            new = torch.where(lookup(self.keys, pos) == key, lookup(self.child, pos), 0)
        else:
            new = torch.zeros_like(key)
        delta = lookup(self.partial, new) - lookup(self.partial, state) \
            + lookup(self.completed, new)
        return new, delta

    def unfinished(self, state: torch.Tensor) -> torch.Tensor:
        """The partial bonus a hypothesis in ``state`` holds (taken back at the end)."""
        return lookup(self.partial, state)


def _start_token(tokenizer: Tokenizer) -> int | None:
    """A character model reads a word boundary before its first word."""
    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.index.get(SPACE)
    return None
