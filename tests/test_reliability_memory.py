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

from ctcasr.cli import _manifest_transcriber
from ctcasr.infer import manifest as runner
from ctcasr.infer import transcriber
from ctcasr.infer.manifest import decode_manifest

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
    monkeypatch.setattr(transcriber, "CHUNK", 100)
    rec = _manifest_transcriber(make_checkpoint(tmp_path / "tiny.pt"), "cpu")
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


def test_decoding_batches_by_the_frame_budget(tmp_path):
    """A manifest is decoded in batches of DECODE_MAX_FRAMES padded frames (the batched beam
    search shares each frame's work over the batch), or of --max-frames; the hypotheses do not
    depend on the batches."""
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    manifest = make_manifest(tmp_path / "wav", 40, distinct=8, seconds=0.5)
    for name, frames, want in (("default", 0, [40]), ("small", 120, [2] * 20)):
        asr = _manifest_transcriber(ckpt, "cpu", max_frames=frames, decoder="beam", beam=4)
        sizes: list[int] = []
        decode = asr.decoder

        def counted(log_probs, lengths, decode=decode, sizes=sizes):
            sizes.append(log_probs.shape[0])
            return decode(log_probs, lengths)

        asr.decoder = counted
        decode_manifest(asr, manifest, tmp_path / name)
        assert sizes == want
    hyps = [(tmp_path / d / "hyp.txt").read_text() for d in ("default", "small")]
    assert hyps[0] == hyps[1] and len(hyps[0].splitlines()) == 40
