"""Inference for users: load a model (checkpoint or ONNX export) and transcribe.

    import ctcasr
    asr = ctcasr.load("exp/run/model.pt")                 # or model.onnx (ctcasr export)
    print(asr.transcribe("call.flac").text)               # any rate, mono or stereo
    for t in asr.transcribe(["a.wav", "b.wav"]):          # batched by length
        print(t.name, t.text, [(w.word, w.start, w.end) for w in t.words])
    asr.transcribe(samples, sample_rate=44100)            # a numpy array or tensor
    s = asr.stream()                                      # a streaming model: results while
    s.accept(chunk, 16000); s.finish()                    # the audio arrives
    s = asr.stream(endpoint=Endpoint(silence_s=1.0))      # segments closed at pauses: s.segments

See docs/inference.md.
"""

from __future__ import annotations

from pathlib import Path

from ctcasr.decode import DecodeOptions
from ctcasr.infer.engine import Engine, ModelInfo, open_engine
from ctcasr.infer.stream import Endpoint
from ctcasr.infer.transcriber import Source, Transcriber, Transcript


def load(
    model: str | Path,
    *,
    decoder: str = "greedy",
    beam: int = 10,
    lm: str | Path | None = None,
    lm_weight: float = 0.5,
    word_bonus: float = 0.0,
    unk_penalty: float = 0.0,
    vocab: str | Path | None = None,
    int8: bool = False,
    threads: int = 0,
    device: str = "cpu",
    timestamps: bool = True,
    chunk_seconds: float = 30.0,
    overlap_seconds: float = 2.0,
    batch_seconds: float = 120.0,
) -> Transcriber:
    """A :class:`Transcriber` for ``model``: a training checkpoint, or a file written by
    ``ctcasr export`` (ONNX; running it needs the ``onnx`` extra).

    ``decoder``: ``greedy`` or ``beam`` (prefix beam search of ``beam`` prefixes, with the word
    n-gram LM ``lm`` in ARPA format and ``unk_penalty`` added per word it does not know;
    ``vocab``: a file of words, with counts, it may output besides the LM's).
    ``int8``: dynamic int8 quantisation of a checkpoint's model (through an int8 ONNX export).
    ``threads`` > 0 sets the intra-op threads. Inputs longer than ``chunk_seconds`` are decoded
    in windows overlapping by ``overlap_seconds``; a batch holds at most ``batch_seconds`` of
    padded audio.
    """
    engine = open_engine(model, int8=int8, threads=threads, device=device)
    options = DecodeOptions(beam=beam, lm=str(lm) if lm else None, lm_weight=lm_weight,
                            word_bonus=word_bonus, unk_penalty=unk_penalty,
                            vocab=str(vocab) if vocab else None)
    return Transcriber(engine, decoder, options, timestamps, chunk_seconds, overlap_seconds,
                       batch_seconds)


__all__ = ["Endpoint", "Engine", "ModelInfo", "Source", "Transcriber", "Transcript", "load",
           "open_engine"]
