"""Word lists for an open-vocabulary search: ``word [count]`` per line (``#`` starts a comment;
a word without a count counts 1). The counts give each word its share of the LM's ``<unk>``
class in the beam search (:mod:`ctcasr.decode.beam`)."""

from __future__ import annotations

import math
from pathlib import Path

from ctcasr.errors import CtcasrError, read_lines


def read_vocab(path: str | Path) -> dict[str, float]:
    """word -> count; errors name the file and line."""
    lines = read_lines(path, "word list")
    counts: dict[str, float] = {}
    for n, line in enumerate(lines, 1):
        body = line.split("#", 1)[0].split()
        if not body:
            continue
        if len(body) > 2:
            raise CtcasrError(f"{path}:{n}: expected 'word [count]', got {line.strip()!r}")
        try:
            count = float(body[1]) if len(body) == 2 else 1.0
        except ValueError:
            count = math.nan
        if not (count > 0 and math.isfinite(count)):
            raise CtcasrError(f"{path}:{n}: the count of {body[0]!r} must be a positive number, "
                              f"not {body[1]!r}")
        counts[body[0]] = counts.get(body[0], 0.0) + count
    if not counts:
        raise CtcasrError(f"{path}: word list has no words")
    return counts
