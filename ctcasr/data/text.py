"""Text normalisation of transcripts (training and scoring see the same words).

:func:`normalise` is for English (letters a-z, digits, apostrophes inside words);
:func:`normalise_unicode` does the same for any script (Common Voice's languages);
:func:`normaliser` picks one by name, as ``ctcasr import --text-norm`` does.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_NOT_WORD = re.compile(r"[^a-z0-9']+")
_EDGE_APOSTROPHES = re.compile(r"(?<![a-z0-9])'+|'+(?![a-z0-9])")


def normalise(text: str) -> str:
    """Lowercase words: punctuation removed except apostrophes inside a word; hyphens split."""
    text = text.lower().translate(_APOSTROPHES)
    text = _NOT_WORD.sub(" ", text)
    text = _EDGE_APOSTROPHES.sub(" ", text)
    return " ".join(text.split())


def normalise_unicode(text: str) -> str:
    """:func:`normalise` for any script: NFC, lower case, and everything but letters, marks
    and digits (of any script) and apostrophes inside a word becomes a space. Scripts written
    without spaces (Chinese, Japanese, Thai) stay one word per run of characters."""
    text = unicodedata.normalize("NFC", text).lower().translate(_APOSTROPHES)
    text = "".join(c if c == "'" or unicodedata.category(c)[0] in "LMN" else " " for c in text)
    text = re.sub(r"(?<![^\W_])'+|'+(?![^\W_])", " ", text)
    return " ".join(text.split())


TEXT_NORMS: dict[str, Callable[[str], str]] = {
    "english": normalise, "unicode": normalise_unicode, "none": lambda t: " ".join(t.split())}


def normaliser(name: str) -> Callable[[str], str]:
    """``english`` (:func:`normalise`), ``unicode`` (:func:`normalise_unicode`) or ``none``
    (white space collapsed, nothing else)."""
    from ctcasr.errors import CtcasrError

    if name not in TEXT_NORMS:
        raise CtcasrError(f"unknown text normalisation {name!r} (choose "
                          f"{', '.join(TEXT_NORMS)})")
    return TEXT_NORMS[name]
