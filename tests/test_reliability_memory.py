"""Issue 6, point 5: decoding streams the manifest, so its memory does not grow with it.

Measured with tracemalloc (Python allocations: what a manifest-sized list, hypotheses or scoring
alignments would grow) over 300 and 1500 utterances, with chunks of 100. The peak RSS of the
real command for 2k and 20k utterances is ``benchmarks/decode_memory.py`` (docs/reliability.md).
"""

from __future__ import annotations

import sys
import tracemalloc

import pytest
from conftest import REPO

from ctcasr.decode import runner
from ctcasr.decode.runner import decode_manifest, load_recognizer

sys.path.insert(0, str(REPO / "benchmarks"))
from decode_memory import make_checkpoint, make_manifest  # noqa: E402


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_decoding_memory_does_not_grow_with_the_manifest(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "CHUNK", 100)
    rec = load_recognizer(make_checkpoint(tmp_path / "tiny.pt"))
    peaks = {}
    for n in (300, 1500):
        manifest = make_manifest(tmp_path / "wav", n, distinct=20, seconds=0.12)
        out = tmp_path / f"out{n}"
        peaks[n] = peak_bytes(lambda m=manifest, o=out: decode_manifest(rec, m, o))
        assert len((out / "hyp.txt").read_text().splitlines()) == n
        assert (out / "summary.json").exists()
    growth = (peaks[1500] - peaks[300]) / 1200
    # reading the whole manifest and keeping hypotheses and alignments cost 1.8 kB per
    # utterance here; streaming keeps only the ids (for the duplicate check): 0.07 kB
    assert growth < 400, pytest.fail(f"{growth:.0f} bytes per utterance; peaks {peaks}")
