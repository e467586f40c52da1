"""Streaming recognition (``asr.stream()``): audio fed in pieces of any size gives the log-probs
of the same model run on the whole (within 1e-5), the same greedy and beam results and word times
as ``transcribe``; models that cannot stream are refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_transcribe import SR, WORDS, make_checkpoint, trained_uni, utterance  # noqa: F401

import ctcasr
from ctcasr.errors import CtcasrError
from ctcasr.infer import Endpoint
from ctcasr.lm.ngram import train_kneser_ney
from ctcasr.tokenizer import BLANK_ID


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
        "ebranchformer": make_checkpoint(d / "eb.pt", "ebranchformer", causal=True,
                                         chunk_size=4, left_chunks=2),
    }


@pytest.mark.parametrize("name", ["lstm", "gru", "lstm-sc", "conformer", "transformer-abs",
                                  "conformer-dynamic", "ebranchformer"])
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


@pytest.mark.parametrize("lm", [False, True])
def test_stream_beam_is_frame_synchronous(checkpoints, tmp_path, lm):
    """The beam (with and without the LM) advances chunk by chunk: each partial is the one-shot
    beam search over the frames so far, the final is ``transcribe``'s."""
    arpa = None
    if lm:
        arpa = tmp_path / "lm.arpa"
        train_kneser_ney([f"{WORDS[0]} {WORDS[1]}", f"{WORDS[1]} {WORDS[1]} {WORDS[0]}"],
                         order=2).write_arpa(arpa)
    asr = ctcasr.load(checkpoints["gru"], decoder="beam", beam=4, lm=arpa, lm_weight=1.0)
    wave = long_wave(5)
    s = asr.stream("mic")
    for p in pieces(wave, 5):
        partial = s.accept(torch.from_numpy(p), SR)
        if s.log_probs:
            lp = torch.cat(s.log_probs)
            want = asr.decoder(lp[None], torch.tensor([lp.shape[0]]))[0][0]
            assert partial.text == asr.tokenizer.decode(want.tokens)
            got = s.search.best(1)[0][0]
            assert got.tokens == want.tokens and got.frames == want.frames
            assert got.score == pytest.approx(want.score, abs=1e-9)
    final = s.finish()
    assert final.name == "mic" and final.text == asr.transcribe(wave, SR).text
    assert len(final.text.split()) > 3


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


def scripted(asr, labels: list[int]) -> None:
    """Make the model's output frames ``labels`` (blank after them), whatever the audio."""
    at, vocab = [0], asr.tokenizer.vocab_size

    def log_probs(h: torch.Tensor) -> torch.Tensor:
        ids = [labels[i] if i < len(labels) else BLANK_ID for i in range(at[0], at[0] + h.shape[1])]
        at[0] += h.shape[1]
        return (torch.nn.functional.one_hot(torch.tensor(ids, dtype=torch.long), vocab) * 20.0
                ).log_softmax(-1)[None]

    asr.engine.model._log_probs = log_probs


def test_endpoint_rules(checkpoints):
    """1 s of blank frames after speech closes a segment (times from the stream's start); 1 s
    of blank with nothing said is dropped; a segment of max_segment_s ends at once."""
    asr = ctcasr.load(checkpoints["lstm"])
    a, b = (asr.tokenizer.encode(w)[0] for w in WORDS)
    frame = asr.info.frame_s  # 0.04 s
    # 0.4 s silence, "a b", 1.2 s silence, "b", then silence to the end (4 s in all)
    labels = [BLANK_ID] * 10 + [a] * 3 + [BLANK_ID] * 5 + [b] * 2 + [BLANK_ID] * 30 + [b] * 2
    scripted(asr, labels)
    s = asr.stream(endpoint=Endpoint(silence_s=1.0))
    wave = np.zeros(4 * SR, np.float32)
    partials = [s.accept(wave[i : i + SR // 10], SR).text for i in range(0, len(wave), SR // 10)]
    final = s.finish()
    first, *rest = s.segments
    assert first.text == f"{WORDS[0]} {WORDS[1]}" and first.start == 0
    assert [w.word for w in first.words] == WORDS[:2]
    assert first.words[0].start == pytest.approx(10 * frame, abs=frame)
    # the second segment: "b" at frame 50; the silence after it is a segment with nothing said,
    # dropped; the last (open) one is empty
    assert [t.text for t in rest] == [WORDS[1]]
    assert rest[0].start > first.start and rest[0].words[0].start == pytest.approx(50 * frame,
                                                                                   abs=frame)
    assert final.text == "" and final.start > rest[0].start
    assert "" in partials and f"{WORDS[0]} {WORDS[1]}" in partials
    # no pause long enough: one segment per max_segment_s
    asr = ctcasr.load(checkpoints["lstm"])
    scripted(asr, [a, BLANK_ID, b, BLANK_ID] * 25)  # 4 s of words
    s = asr.stream(endpoint=Endpoint(silence_s=1.0, max_segment_s=1.0))
    for i in range(0, len(wave), SR // 10):
        s.accept(wave[i : i + SR // 10], SR)
    s.finish()
    assert len(s.segments) >= 3 and all(0.9 < t.duration < 1.2 for t in s.segments)
    with pytest.raises(CtcasrError, match="silence_s and max_segment_s must be > 0"):
        Endpoint(silence_s=0)


def test_endpoint_splits_a_stream_where_one_shot_greedy_has_silence(trained_uni):  # noqa: F811
    """Two phrases 1.5 s apart: two segments, and together they are the one-shot result (the
    cut falls in blank frames, where greedy decoding has nothing to join)."""
    asr = ctcasr.load(trained_uni)
    rng = np.random.default_rng(3)
    wave = np.concatenate([utterance(rng, words=3, seed=30)[0], np.zeros(3 * SR // 2, np.float32),
                           utterance(rng, words=2, seed=31)[0]])
    s = asr.stream(endpoint=Endpoint(silence_s=1.0))
    for p in pieces(wave, 3):
        s.accept(p, SR)
    last = s.finish()
    whole = asr.transcribe(wave, SR)
    assert len(s.segments) == 1 and len(whole.text.split()) == 5
    assert f"{s.segments[0].text} {last.text}" == whole.text
    got = [(w.word, w.start, w.end) for t in [*s.segments, last] for w in t.words]
    assert [g[0] for g in got] == [w.word for w in whole.words]
    for (_, start, end), w in zip(got, whole.words, strict=True):
        assert start == pytest.approx(w.start, abs=0.05) and end == pytest.approx(w.end, abs=0.05)
