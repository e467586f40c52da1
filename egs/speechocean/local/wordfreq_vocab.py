#!/usr/bin/env python3
"""Write an open-vocabulary word list (``ctcasr decode --vocab``): CMUdict's words as
transcripts write them, each with its English frequency from wordfreq, most frequent first
(words wordfreq does not know are left out).

    python local/wordfreq_vocab.py OUT.tsv

wordfreq is not in the project's lock (57 MB for a change within one run's noise,
docs/results.md): run this with a Python that has it, e.g. a separate environment with
``pip install wordfreq==3.1.1`` and ctcasr on PYTHONPATH.
"""

from __future__ import annotations

import sys

from ctcasr.data.text import normalise
from ctcasr.tokenizer import default_lexicon


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        from wordfreq import word_frequency
    except ImportError:
        sys.exit("error: needs wordfreq (pip install wordfreq==3.1.1, outside .venv)")
    # the words as transcripts write them (not CMUdict's "a." or "'bout")
    words = [w for w in default_lexicon().entries if normalise(w) == w]
    freq = {w: word_frequency(w, "en") for w in words}
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        for w, f in sorted(freq.items(), key=lambda x: -x[1]):
            if f > 0:
                out.write(f"{w}\t{f:.3e}\n")


if __name__ == "__main__":
    main()
