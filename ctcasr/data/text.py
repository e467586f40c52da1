"""Text normalisation for English transcripts (training and scoring see the same words)."""

from __future__ import annotations

import re

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_NOT_WORD = re.compile(r"[^a-z0-9']+")
_EDGE_APOSTROPHES = re.compile(r"(?<![a-z0-9])'+|'+(?![a-z0-9])")


def normalise(text: str) -> str:
    """Lowercase words: punctuation removed except apostrophes inside a word; hyphens split."""
    text = text.lower().translate(_APOSTROPHES)
    text = _NOT_WORD.sub(" ", text)
    text = _EDGE_APOSTROPHES.sub(" ", text)
    return " ".join(text.split())
