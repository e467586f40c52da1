"""Issue 6, point 5: decoding streams the manifest, so its memory does not grow with it.

Measured with tracemalloc (Python allocations: what a manifest-sized list, hypotheses or scoring
alignments would grow) over 300 and 1500 utterances, with chunks of 100. The peak RSS of the
real command for 2k and 20k utterances is ``benchmarks/decode_memory.py`` (docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
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


def test_decoding_batches_are_not_held_to_the_training_budget(tmp_path, monkeypatch):
    """A model trained with a small padded-frames budget is decoded in batches of at least
    DECODE_MAX_FRAMES (no backward activations to hold; the batched beam search shares each
    frame's work over the batch), with the same hypotheses as in its training-sized batches."""
    rec = load_recognizer(make_checkpoint(tmp_path / "tiny.pt"))
    data = dataclasses.replace(rec.config.data, max_frames_per_batch=120)  # 2 of 0.5 s
    rec.config = dataclasses.replace(rec.config, data=data)
    manifest = make_manifest(tmp_path / "wav", 40, distinct=8, seconds=0.5)
    sizes: list[int] = []
    make = runner.make_decoder

    def spy(*args, **kwargs):
        decode = make(*args, **kwargs)

        def counted(log_probs, lengths):
            sizes.append(log_probs.shape[0])
            return decode(log_probs, lengths)
        return counted

    monkeypatch.setattr(runner, "make_decoder", spy)
    opts = runner.DecodeOptions(beam=4)
    decode_manifest(rec, manifest, tmp_path / "default", "beam", options=opts)
    assert sizes == [40]
    sizes.clear()
    decode_manifest(rec, manifest, tmp_path / "small", "beam", max_frames=120, options=opts)
    assert sizes == [2] * 20
    hyps = [(tmp_path / d / "hyp.txt").read_text() for d in ("default", "small")]
    assert hyps[0] == hyps[1] and len(hyps[0].splitlines()) == 40
