"""Streaming recognition (``asr.stream()``): audio fed in pieces of any size gives the log-probs
of the same model run on the whole (within 1e-5), the same greedy and beam results and word times
as ``transcribe``; models that cannot stream are refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_transcribe import SR, make_checkpoint, utterance

import ctcasr
from ctcasr.errors import CtcasrError


def pieces(wave: np.ndarray, seed: int) -> list[np.ndarray]:
    """Random cuts: a few samples (1 in 10), a few hundred to a few thousand, seconds."""
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(wave):
        kind = rng.choice(3, p=[0.1, 0.6, 0.3])
        n = int(rng.integers(1, 8) if kind == 0 else rng.integers(50, 3000) if kind == 1
                else rng.integers(SR, 3 * SR))
        out.append(wave[i : i + n])
        i += n
    return out


def long_wave(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([utterance(rng, seed=seed * 10 + k)[0] for k in range(3)])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    return {
        "lstm": make_checkpoint(d / "lstm.pt", "lstm", bidirectional=False),
        "gru": make_checkpoint(d / "gru.pt", "gru", bidirectional=False),
        "lstm-sc": make_checkpoint(d / "sc.pt", "lstm", bidirectional=False, model_extra={
            "inter_ctc_layers": [1], "inter_ctc_condition": True}),
        "conformer": make_checkpoint(d / "conf.pt", "conformer", causal=True, chunk_size=4,
                                     left_chunks=2, conv_kernel=5),
        "transformer-abs": make_checkpoint(d / "tr.pt", "transformer", chunk_size=3,
                                           pos_enc="abs", model_extra={
                                               "inter_ctc_layers": [1],
                                               "inter_ctc_condition": True}),
        "conformer-dynamic": make_checkpoint(d / "dyn.pt", "conformer", causal=True,
                                             dynamic_chunk=True, conv_kernel=5),
    }


@pytest.mark.parametrize("name", ["lstm", "gru", "lstm-sc", "conformer", "transformer-abs",
                                  "conformer-dynamic"])
@pytest.mark.parametrize("seed", [0, 1])
def test_stream_equals_one_shot(checkpoints, name, seed):
    asr = ctcasr.load(checkpoints[name])
    wave = long_wave(seed)
    # a dynamic-chunk model streams with the chunk chosen now (and decodes so one-shot too)
    s = asr.stream(chunk_size=5, left_chunks=1) if name.endswith("dynamic") else asr.stream()
    partials = [s.accept(p, SR).text for p in pieces(wave, seed)]
    final = s.finish()
    want = asr.engine.log_probs([torch.from_numpy(wave)])[0]
    got = torch.cat(s.log_probs)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-5
    whole = asr.transcribe(wave, SR)
    assert final.text == whole.text and final.duration == pytest.approx(len(wave) / SR)
    assert [(w.word, w.start, w.end) for w in final.words] == \
        [(w.word, w.start, w.end) for w in whole.words]
    # greedy partials only grow: each is the start of the final text
    assert all(final.text.startswith(p) for p in partials)


def test_stream_with_beam_and_torch_pieces(checkpoints):
    asr = ctcasr.load(checkpoints["gru"], decoder="beam", beam=4)
    wave = long_wave(5)
    s = asr.stream("mic")
    for p in pieces(wave, 5):
        s.accept(torch.from_numpy(p), SR)
    final = s.finish()
    assert final.name == "mic" and final.text == asr.transcribe(wave, SR).text


def test_streams_refused_with_the_reason(checkpoints, tmp_path):
    bi = ctcasr.load(make_checkpoint(tmp_path / "bi.pt", "lstm"))
    with pytest.raises(CtcasrError, match="lstm encoder sees the whole utterance at once: it "
                                          "does not stream"):
        bi.stream()
    conf = ctcasr.load(make_checkpoint(tmp_path / "c.pt", "conformer"))
    with pytest.raises(CtcasrError, match="does not stream"):
        conf.stream()
    with pytest.raises(CtcasrError, match="does not stream"):  # chunks, but a centred conv
        conf.stream(chunk_size=4)
    cmn = ctcasr.load(make_checkpoint(tmp_path / "u.pt", "lstm", utterance_cmn=True,
                                      bidirectional=False))
    with pytest.raises(CtcasrError, match="utterance_cmn .* does not stream"):
        cmn.stream()
    s = ctcasr.load(checkpoints["lstm"]).stream()
    with pytest.raises(CtcasrError, match="audio at 16000 Hz; this model takes 8000 Hz"):
        s.accept(np.zeros(100, np.float32), 16000)
    with pytest.raises(CtcasrError, match=r"finite \[samples\] array, got shape \(2, 5\)"):
        s.accept(np.zeros((2, 5), np.float32), SR)
    s.accept(np.zeros(10, np.float32), SR)
    assert s.finish().text == ""  # too short for one output frame: nothing, as one-shot
    with pytest.raises(CtcasrError, match="the stream is finished"):
        s.accept(np.zeros(10, np.float32), SR)
