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

from ctcasr.infer.engine import Engine, ModelInfo
from ctcasr.infer.load import load, open_engine
from ctcasr.infer.stream import Endpoint
from ctcasr.infer.transcriber import Source, Transcriber
from ctcasr.infer.transcript import Transcript

__all__ = ["Endpoint", "Engine", "ModelInfo", "Source", "Transcriber", "Transcript", "load",
           "open_engine"]
