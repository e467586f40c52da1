"""Recognition while the audio arrives: ``s = asr.stream()``, ``s.accept(samples, sr)`` returns
the partial result, ``s.finish()`` the final one (both :class:`~ctcasr.infer.Transcript`).

A streaming model is one whose output frame depends on no later audio than the front end's own
look-ahead and, with chunked attention, the end of its chunk: a unidirectional LSTM / GRU
(``model.encoder_conf.bidirectional: false``), or a Conformer / Transformer with chunked
attention (``chunk_size``, or ``asr.stream(chunk_size=N)`` for a model trained with
``dynamic_chunk``; a Conformer also needs ``causal: true``). Every stage keeps what spans a chunk
boundary, so that audio fed in pieces of any size gives the log-probs (within float rounding;
tested to 1e-5) of the same model run on the whole at once:

- fbank: the samples past the last whole analysis window (Kaldi's frames are computed one
  window at a time: ``dither`` 0, ``snip_edges``);
- global CMVN: nothing (per frame); ``utterance_cmn`` needs the whole utterance: refused;
- the conv front end: the fbank frames from the first one the next output frame reads (its
  convolutions are "valid", so output ``t`` reads input frames ``factor * t`` onwards);
- the RNN: each layer's state (and self-conditioned CTC's feedback, which is per frame);
- chunked attention: the encoder's input frames until a chunk is whole (its outputs come a chunk
  at a time), each layer's attention keys and values of ``left_chunks`` chunks, the causal
  convolution's last ``kernel - 1`` frames, the position of the next frame;
- the decoder, frame-synchronous: greedy keeps the last frame's label (to merge repeats across
  a boundary); the prefix beam search (with or without the LM) keeps its beam
  (:class:`~ctcasr.decode.beam.BeamSearch`), and its final result is the one-shot decode's.

Word times and confidences come with the final result (a forced alignment over all frames);
partial results carry the text. Audio must be at the model's rate (resample before).

Endpointing (``asr.stream(endpoint=Endpoint())``, sherpa-onnx's and WeNet's rules over the
model's own frames): a run of ``silence_s`` of frames whose best label is blank, after some
speech, or ``max_segment_s`` of speech, closes the segment: its final result (word times from
the start of the stream) goes to ``Stream.segments`` and decoding starts afresh, while the
encoder's state runs on, so the log-probs stay those of the whole stream. A silent stretch of
``silence_s`` with no speech is dropped without a result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ctcasr.data.features import fbank, num_frames, window_hop
from ctcasr.decode import Decoder
from ctcasr.decode.timestamps import word_times
from ctcasr.errors import CtcasrError
from ctcasr.infer.engine import EagerEngine, Engine
from ctcasr.infer.transcript import Transcript
from ctcasr.models.ctc import StreamState
from ctcasr.tokenizer import BLANK_ID


@dataclass(frozen=True)
class Endpoint:
    """When a segment ends."""

    silence_s: float = 1.0  # trailing frames whose best label is blank, after some speech
    max_segment_s: float = 20.0  # a segment this long ends at once

    def __post_init__(self) -> None:
        if self.silence_s <= 0 or self.max_segment_s <= 0:
            raise CtcasrError(f"endpoint: silence_s and max_segment_s must be > 0, got {self}")


class Stream:
    """One utterance (or, with an :class:`Endpoint`, a conversation of segments) recognised as
    its audio arrives."""

    def __init__(self, engine: Engine, decoder: Decoder, text_of: Callable[[list[int]], str],
                 timestamps: bool = True, name: str = "<stream>", chunk_size: int = 0,
                 left_chunks: int = -1, endpoint: Endpoint | None = None) -> None:
        """``decoder`` (greedy, or a beam search, which runs frame-synchronously) and
        ``text_of`` (its tokens as text) as :class:`~ctcasr.infer.Transcriber` makes them."""
        if chunk_size and isinstance(engine, EagerEngine):
            from ctcasr.models import set_chunking

            set_chunking(engine.model, chunk_size, left_chunks)
        problem = stream_problem(engine)
        if problem:
            raise CtcasrError(problem)
        assert isinstance(engine, EagerEngine)
        self.model, self.info, self.name = engine.model, engine.info, name
        self.decoder, self.text_of, self.timestamps = decoder, text_of, timestamps
        self.sr = self.info.features.sample_rate
        self.win, self.hop = window_hop(self.info.features)
        self.wave = torch.zeros(0)  # samples not yet in a frame
        self.state: StreamState | None = None  # the model's
        self.samples = self.frames = 0  # audio in, output frames out
        self.greedy = not hasattr(decoder, "search")
        self.finished = False
        self.endpoint = endpoint
        self.segments: list[Transcript] = []  # closed by the endpoint rule, in order
        self._new_segment()

    def _new_segment(self) -> None:
        self.start = self.frames  # the open segment's first output frame
        self.log_probs: list[torch.Tensor] = []  # [n, V] per chunk, the segment's
        self.tokens: list[int] = []  # greedy: the labels so far, and the last frame's label
        self.last = BLANK_ID
        self.search = None if self.greedy else self.decoder.search(1)  # the beam's
        self.voiced = False  # some frame's best label was not blank
        self.silent = 0  # frames since the last such frame (or the segment's start)

    @torch.inference_mode()
    def accept(self, samples: Any, sample_rate: int) -> Transcript:
        """Take the next piece of audio (``[n]`` float in [-1, 1], numpy or torch, any ``n``);
        returns the result so far."""
        if self.finished:
            raise CtcasrError(f"{self.name}: the stream is finished")
        if sample_rate != self.sr:
            raise CtcasrError(f"{self.name}: audio at {sample_rate} Hz; this model takes "
                              f"{self.sr} Hz (resample before streaming)")
        data = samples.detach().cpu() if isinstance(samples, torch.Tensor) \
            else torch.from_numpy(np.asarray(samples, dtype=np.float32))
        if data.ndim != 1 or not bool(torch.isfinite(data).all()):
            raise CtcasrError(f"{self.name}: audio must be a finite [samples] array, got "
                              f"shape {tuple(data.shape)}")
        self.samples += data.shape[0]
        self.wave = torch.cat([self.wave, data.float()])
        self._advance()
        ep, frame_s = self.endpoint, self.info.frame_s
        if ep is not None:
            if self.voiced and (self.silent * frame_s >= ep.silence_s
                                or (self.frames - self.start) * frame_s >= ep.max_segment_s):
                self.segments.append(self._result(final=True))
                self._new_segment()
            elif not self.voiced and self.silent * frame_s >= ep.silence_s:
                self._new_segment()  # nothing said: dropped
        return self._result(final=False)

    @torch.inference_mode()
    def finish(self) -> Transcript:
        """The final result (with word times); the stream takes no more audio. Samples after
        the last whole analysis window are left out, as a one-shot decode leaves them."""
        self.finished = True
        self._advance(final=True)
        return self._result(final=True)

    # ----------------------------------------------------------------------- internals
    def _advance(self, final: bool = False) -> None:
        n = num_frames(self.wave.shape[0], self.info.features)
        new = torch.zeros(0, self.info.features.num_mel_bins)
        if n:
            new = fbank(self.wave[: (n - 1) * self.hop + self.win], self.info.features)
            self.wave = self.wave[n * self.hop :]
        if not n and not final:
            return
        lp, self.state = self.model.stream_step(new, self.state, final)
        lp = lp.cpu()
        if not lp.shape[0]:
            return
        self.log_probs.append(lp)
        self.frames += lp.shape[0]
        best = lp.argmax(-1)
        spoken = (best != BLANK_ID).nonzero()
        if len(spoken):
            self.voiced, self.silent = True, lp.shape[0] - 1 - int(spoken[-1])
        else:
            self.silent += lp.shape[0]
        if self.search is not None:
            self.search.advance(lp[None], torch.tensor([lp.shape[0]]))
        else:
            for k in best.tolist():
                if k != BLANK_ID and k != self.last:
                    self.tokens.append(k)
                self.last = k

    def _result(self, final: bool) -> Transcript:
        tokens = self.tokens if self.search is None else self.search.best(1)[0][0].tokens
        words, text = [], self.text_of(tokens)
        if final and self.timestamps and tokens:  # (partials need no log-probs)
            lp = torch.cat(self.log_probs)
            words = word_times(lp, tokens, self.info.tokenizer, self.info.frame_s, text)
        conf = sum(w.confidence for w in words) / len(words) if words else None
        start = self.start * self.info.frame_s
        if start:  # a later segment: times from the start of the stream
            words = [replace(w, start=w.start + start, end=w.end + start) for w in words]
        end = self.samples / self.sr if self.finished or not final \
            else self.frames * self.info.frame_s
        return Transcript(self.name, text, end - start, words,
                          conf, start)


def stream_problem(engine: Engine) -> str | None:
    """Why ``engine``'s model cannot stream, or None when it can."""
    if not isinstance(engine, EagerEngine):
        return (f"{engine.name} models do not stream: an export is one whole-utterance graph; "
                "stream a checkpoint")
    if not getattr(engine.model.encoder, "streams", False):
        return (f"this model's {engine.info.encoder} encoder sees the whole utterance at once: "
                "it does not stream (a one-direction lstm / gru, bidirectional: false, streams; "
                "so does a conformer / transformer with chunked attention: chunk_size, or "
                "stream(chunk_size=N) after dynamic_chunk training, and causal: true)")
    if engine.info.features.utterance_cmn:
        return ("data.features.utterance_cmn subtracts the whole utterance's mean: a model "
                "trained with it does not stream")
    return None
