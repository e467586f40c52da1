"""Transcribe audio files or arrays with any engine (checkpoint or ONNX export).

**Batching.** Inputs are taken ``CHUNK`` at a time (the decode runner's chunk); those of at most
``chunk_seconds`` are decoded whole, sorted by length into batches of at most ``batch_seconds``
of padded audio (``ctcasr.data.sampler.BucketBatchSampler``), and results come back in input
order.

**Long inputs** (longer than ``chunk_seconds``, 30 s by default) are read window by window:
windows of ``chunk_seconds`` start every ``chunk_seconds - overlap_seconds`` (rounded to whole
output frames, so a window's output frame ``j`` is frame ``start + j`` of the whole file), a few
windows per batch. Between two windows the cut is the output frame, inside the middle half of
their overlap, where the earlier window is most sure of a blank; each window contributes its
frames between its two cuts, so every kept frame saw at least a quarter of the overlap of
context on both sides. Each piece is decoded on its own (the beam search's LM context restarts
at a cut, which falls in a pause when there is one), its tokens and word times shifted to the
file's time line and joined. Memory holds a batch of windows, never the file: it does not grow
with the input's length (tests/test_transcribe.py checks a 10-minute file).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import torch

from ctcasr.data.audio import audio_duration, load_audio, to_mono
from ctcasr.data.features import window_hop
from ctcasr.data.sampler import BucketBatchSampler
from ctcasr.decode import make_decoder, output_text
from ctcasr.decode.runner import CHUNK
from ctcasr.decode.settings import DecodeSettings
from ctcasr.decode.timestamps import WordTime, word_times
from ctcasr.errors import CtcasrError
from ctcasr.infer.engine import Engine
from ctcasr.tokenizer import BLANK_ID

if TYPE_CHECKING:
    from ctcasr.infer.stream import Endpoint, Stream


@dataclass
class Transcript:
    name: str  # the file's path, or the name given with an array
    text: str
    duration: float  # seconds of audio
    words: list[WordTime] = field(default_factory=list)  # with timestamps
    confidence: float | None = None  # mean word confidence (with timestamps and words)
    start: float = 0.0  # seconds into the stream (a segment of a stream with endpointing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "audio": self.name, "text": self.text, "duration": round(self.duration, 3),
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3),
                       "confidence": round(w.confidence, 4)} for w in self.words],
        }


@dataclass
class Source:
    """One input: a file (or a segment of it: ``offset`` and ``duration`` seconds) or a
    waveform already at the model's rate."""

    name: str
    path: Path | None = None
    wave: torch.Tensor | None = None
    offset: float | None = None
    duration: float = 0.0  # 0: the whole file

    def num_samples(self, sr: int) -> int:
        if self.wave is not None:
            return self.wave.shape[0]
        assert self.path is not None
        seconds = self.duration or audio_duration(self.path) - (self.offset or 0.0)
        return round(seconds * sr)

    def read(self, sr: int, start: int = 0, n: int = 0) -> torch.Tensor:
        """Samples ``[start, start + n)`` (``n`` 0: to the end) at ``sr``."""
        if self.wave is not None:
            return self.wave[start : start + n if n else None]
        assert self.path is not None
        if start == 0 and not n:
            return load_audio(self.path, sr, offset=self.offset, duration=self.duration)
        return load_audio(self.path, sr, offset=(self.offset or 0.0) + start / sr,
                          duration=n / sr)


# extensions looked for in folders: what libsndfile reads (RAW needs a format, so not it)
AUDIO_EXTENSIONS = frozenset({f".{k.lower()}" for k in sf.available_formats()} - {".raw"}
                             | {".sph", ".opus", ".aif", ".oga"})


def expand_inputs(items: Iterable[str], stdin: IO[str] | None = None) -> Iterator[Source]:
    """Command-line inputs -> sources: a file as given, a folder's audio files (recursively,
    sorted), ``-``: one path per line of ``stdin``."""
    for item in items:
        if item == "-":
            if stdin is None:
                raise CtcasrError("- (paths on stdin) cannot be used here")
            paths = (line.strip() for line in stdin)
            yield from (Source(p, Path(p)) for p in paths if p)
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            if not found:
                raise CtcasrError(f"{path}: no audio files in this folder")
            yield from (Source(str(p), p) for p in found)
        else:  # a missing file is reported when it is read
            yield Source(item, path)


@dataclass
class _Piece:
    tokens: list[int]
    words: list[WordTime]


class Transcriber:
    """Decodes with ``engine`` as ``settings`` say (default: as the model carries)."""

    def __init__(
        self,
        engine: Engine,
        settings: DecodeSettings | None = None,
        timestamps: bool = True,
        chunk_seconds: float = 30.0,
        overlap_seconds: float = 2.0,
        batch_seconds: float = 120.0,
        max_batch: int = 64,
    ) -> None:
        if not 0 <= overlap_seconds < chunk_seconds / 2:
            raise CtcasrError(f"overlap ({overlap_seconds} s) must be >= 0 and less than half "
                              f"the chunk ({chunk_seconds} s)")
        self.engine = engine
        self.info = engine.info
        self.tokenizer = engine.info.tokenizer
        self.settings = engine.info.decoding if settings is None else settings
        self.decoder = make_decoder(self.settings.decoder, self.settings.options, self.tokenizer)
        self.text_of = output_text(self.decoder, self.tokenizer)[0]  # tokens -> text
        self.decoder_name = self.settings.decoder
        self.timestamps = timestamps
        self.sr = self.info.features.sample_rate
        self.out_hop = self.info.subsampling * window_hop(self.info.features)[1]  # per frame
        self.window = max(round(chunk_seconds * self.sr), 2 * engine.min_samples)
        self.stride_out = max(1, round((chunk_seconds - overlap_seconds) / self.info.frame_s))
        self.stride = self.stride_out * self.out_hop
        self.batch_samples = max(round(batch_seconds * self.sr), self.window)
        self.max_batch = max_batch

    @property
    def max_unchunked_seconds(self) -> float:
        """Inputs up to this long are decoded in one pass."""
        return self.window / self.sr

    # ----------------------------------------------------------------------- public API
    def transcribe(self, audio: Any, sample_rate: int | None = None,
                   name: str = "<array>") -> Transcript | list[Transcript]:
        """A path, an array or tensor (``[samples]`` or ``[samples, channels]``, at
        ``sample_rate``), or a list of these -> a :class:`Transcript` (a list for a list)."""
        if isinstance(audio, (list, tuple)):
            return list(self.transcribe_iter(self.source(a, sample_rate, f"{name}[{i}]")
                                             for i, a in enumerate(audio)))
        return next(self.transcribe_iter([self.source(audio, sample_rate, name)]))

    def stream(self, name: str = "<stream>", chunk_size: int = 0, left_chunks: int = -1,
               endpoint: Endpoint | None = None) -> Stream:
        """Recognition as the audio arrives (a streaming model: :mod:`ctcasr.infer.stream`);
        ``chunk_size`` > 0 sets a chunked-attention model's chunk (for the whole model);
        ``endpoint`` splits the stream into segments at pauses."""
        from ctcasr.infer.stream import Stream

        return Stream(self, name, chunk_size, left_chunks, endpoint)

    def source(self, audio: Any, sample_rate: int | None = None,
               name: str = "<array>") -> Source:
        if isinstance(audio, (str, Path)):
            return Source(str(audio), Path(audio))
        if sample_rate is None:
            raise CtcasrError("transcribing an array needs its sample_rate")
        data = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else audio
        data = np.asarray(data, dtype=np.float32)
        if data.ndim not in (1, 2) or data.shape[0] == 0 or not np.isfinite(data).all():
            raise CtcasrError(f"{name}: audio must be a non-empty, finite [samples] or "
                              f"[samples, channels] array, got shape {data.shape}")
        return Source(name, wave=to_mono(data, sample_rate, self.sr))

    def transcribe_iter(
        self, sources: Iterable[Source], on_error: Callable[[CtcasrError], None] | None = None,
    ) -> Iterator[Transcript]:
        """Transcripts in input order. A bad input raises, or with ``on_error`` is handed to
        it and left out."""
        sources = iter(sources)
        while chunk := list(itertools.islice(sources, CHUNK)):
            yield from self._chunk(chunk, on_error)

    # ----------------------------------------------------------------------- internals
    def _chunk(self, chunk: list[Source],
               on_error: Callable[[CtcasrError], None] | None) -> Iterator[Transcript]:
        lengths: dict[int, int] = {}
        for i, s in enumerate(chunk):
            try:
                lengths[i] = s.num_samples(self.sr)
            except CtcasrError as e:
                _fail(e, on_error)
        short = [i for i in lengths if lengths[i] <= self.window]
        done: dict[int, Transcript] = {}
        if short:
            sampler = BucketBatchSampler([max(lengths[i], 1) for i in short],
                                         self.batch_samples, self.max_batch)
            for batch in sampler.batches(0):
                done.update(self._short_batch([short[b] for b in batch], chunk, on_error))
        for i in sorted(lengths):
            if i not in done and lengths[i] > self.window:
                try:
                    done[i] = self._long(chunk[i], lengths[i])
                except CtcasrError as e:
                    _fail(e, on_error)
            if i in done:
                yield done.pop(i)

    def _short_batch(self, idx: list[int], chunk: list[Source],
                     on_error: Callable[[CtcasrError], None] | None) -> dict[int, Transcript]:
        waves = {}
        for i in idx:
            try:
                waves[i] = chunk[i].read(self.sr)
            except CtcasrError as e:
                _fail(e, on_error)
        if not waves:
            return {}
        lps = self.engine.log_probs([self._padded(w) for w in waves.values()])
        out = {}
        for (i, wave), lp in zip(waves.items(), lps, strict=True):
            piece = self._decode(lp, 0)
            out[i] = self._transcript(chunk[i].name, wave.shape[0], [piece])
        return out

    def _long(self, src: Source, total: int) -> Transcript:
        starts = list(range(0, max(total - self.window, 0) + self.stride, self.stride))
        per_batch = max(1, self.batch_samples // self.window)
        overlap = round(self.window / self.out_hop) - self.stride_out  # output frames
        pieces, cut = [], 0  # cut: the output frame where the next piece starts
        for b in range(0, len(starts), per_batch):
            batch = starts[b : b + per_batch]
            waves = [src.read(self.sr, s, min(self.window, total - s)) for s in batch]
            for s, lp in zip(batch, self.engine.log_probs([self._padded(w) for w in waves]),
                             strict=True):
                first = s // self.out_hop  # the file's output frame of lp[0]
                end = first + lp.shape[0]
                if s != starts[-1]:  # cut in the middle half of the overlap, at a blank
                    lo = first + self.stride_out + overlap // 4
                    hi = min(max(lo + 1, first + self.stride_out + overlap - overlap // 4), end)
                    lo = min(lo, hi - 1)
                    end = lo + int(lp[lo - first : hi - first, BLANK_ID].argmax())
                pieces.append(self._decode(lp[cut - first : end - first], cut))
                cut = end
        return self._transcript(src.name, total, pieces)

    def _padded(self, wave: torch.Tensor) -> torch.Tensor:
        """Zero-pad a waveform too short for the front end (silence decodes to nothing)."""
        short = self.engine.min_samples - wave.shape[0]
        return torch.nn.functional.pad(wave, (0, short)) if short > 0 else wave

    def _decode(self, lp: torch.Tensor, first_frame: int) -> _Piece:
        best = self.decoder(lp[None], torch.tensor([lp.shape[0]]))[0][0]
        words = []
        if self.timestamps:
            words = word_times(lp, best.tokens, self.tokenizer, self.info.frame_s,
                               self.text_of(best.tokens))
            shift = first_frame * self.info.frame_s
            for w in words:
                w.start, w.end = w.start + shift, w.end + shift
        return _Piece(best.tokens, words)

    def _transcript(self, name: str, samples: int, pieces: list[_Piece]) -> Transcript:
        tokens = [t for p in pieces for t in p.tokens]
        words = [w for p in pieces for w in p.words]
        conf = sum(w.confidence for w in words) / len(words) if words else None
        return Transcript(name, self.text_of(tokens), samples / self.sr, words, conf)


def _fail(e: CtcasrError, on_error: Callable[[CtcasrError], None] | None) -> None:
    if on_error is None:
        raise e
    on_error(e)
