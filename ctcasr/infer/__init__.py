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

from ctcasr.infer.engine import Engine, ModelInfo, open_engine
from ctcasr.infer.stream import Endpoint
from ctcasr.infer.transcriber import Source, Transcriber, Transcript


def load(
    model: str | Path,
    *,
    decoder: str | None = None,
    beam: int | None = None,
    lm: str | Path | None = None,
    lm_weight: float | None = None,
    word_bonus: float | None = None,
    unk_penalty: float | None = None,
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

    It decodes as the model carries (the decoder and LM that ``ctcasr tune-lm`` chose, so as
    the recipe that made it reported; greedy for a model that carries nothing); each argument
    given changes that: ``decoder`` ``greedy`` or ``beam`` (prefix beam search of ``beam``
    prefixes, CLI ``--beam-size``), ``lm`` a word n-gram LM in ARPA format (``"none"``: beam
    search without the carried LM), ``lm_weight``, ``word_bonus`` (added per word),
    ``unk_penalty`` (added per word the LM does not know; ``-inf``: only its words), ``vocab``
    a file of words, with counts, it may output besides the LM's.
    ``int8``: dynamic int8 quantisation of a checkpoint's model (through an int8 ONNX export).
    ``threads`` > 0 sets the intra-op threads. Inputs longer than ``chunk_seconds`` are decoded
    in windows overlapping by ``overlap_seconds``; a batch holds at most ``batch_seconds`` of
    padded audio.
    """
    engine = open_engine(model, int8=int8, threads=threads, device=device)
    settings = engine.info.decoding.override(decoder, lm, vocab, beam=beam, lm_weight=lm_weight,
                                             word_bonus=word_bonus, unk_penalty=unk_penalty)
    return Transcriber(engine, settings, timestamps, chunk_seconds, overlap_seconds,
                       batch_seconds)


__all__ = ["Endpoint", "Engine", "ModelInfo", "Source", "Transcriber", "Transcript", "load",
           "open_engine"]
