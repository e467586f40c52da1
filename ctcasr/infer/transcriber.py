"""Transcribe audio files, manifest utterances or arrays with any engine (checkpoint or ONNX
export): the one inference path of ``transcribe``, ``decode``, ``tune-lm``, ``serve`` and
``ctcasr.load``.

**Batching.** Inputs are taken ``CHUNK`` at a time; those of at most ``chunk_seconds`` are
decoded whole, sorted by length into batches of at most ``batch_seconds`` of padded audio
(``ctcasr.data.sampler.BucketBatchSampler``), read by ``workers`` threads (0: in this one), run
through the engine and decoded as one batch (the batched beam search does each frame's work
once for the batch); results come back in input order.

**Long inputs** (longer than ``chunk_seconds``, 30 s by default; 0: never) are read window by
window: windows of ``chunk_seconds`` start every ``chunk_seconds - overlap_seconds`` (rounded to
whole output frames, so a window's output frame ``j`` is frame ``start + j`` of the whole file),
a few windows per batch. Between two windows the cut is the output frame, inside the middle
half of their overlap, where the earlier window is most sure of a blank; each window contributes
its frames between its two cuts, so every kept frame saw at least a quarter of the overlap of
context on both sides. Each piece is decoded on its own (the beam search's LM context restarts
at a cut, which falls in a pause when there is one), its tokens and word times shifted to the
file's time line and joined. Memory holds a batch of windows, never the file: it does not grow
with the input's length (tests/test_transcribe.py checks a 10-minute file).

**Word times** (``timestamps``) span each word's units' frames; with ``snap`` their edges move to
the pauses in the audio (:mod:`ctcasr.decode.pauses`, as ``ctcasr align`` does; the level track
is read a minute at a time).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import soundfile as sf
import torch
from torch.nn.utils.rnn import pad_sequence

from ctcasr.data.audio import audio_duration, load_audio, to_mono
from ctcasr.data.features import window_hop
from ctcasr.data.sampler import BucketBatchSampler
from ctcasr.decode import Hypothesis, make_decoder, output_text
from ctcasr.decode.pauses import HOP_S, Snap, frame_db, snap_spans
from ctcasr.decode.settings import DecodeSettings, hotword_list
from ctcasr.decode.timestamps import WordTime, word_times
from ctcasr.errors import CtcasrError
from ctcasr.infer.engine import Engine
from ctcasr.infer.stream import Endpoint, Stream, stream_problem
from ctcasr.infer.transcript import Transcript
from ctcasr.tokenizer import BLANK_ID

CHUNK = 1000  # inputs read, decoded and returned at a time
OnError = Callable[[CtcasrError], None] | None


@dataclass
class Source:
    """One input: a file (or a segment of it: ``offset`` and ``duration`` seconds) or a
    waveform already at the model's rate."""

    name: str
    path: Path | None = None
    wave: torch.Tensor | None = None
    offset: float | None = None
    duration: float = 0.0  # 0: the whole file (read from its header)
    where: str = ""  # "manifest.jsonl:LINE", for error messages

    def num_samples(self, sr: int) -> int:
        if self.wave is not None:
            return self.wave.shape[0]
        assert self.path is not None
        seconds = self.duration or audio_duration(self.path, self.where) - (self.offset or 0.0)
        return round(seconds * sr)

    def read(self, sr: int, start: int = 0, n: int = 0) -> torch.Tensor:
        """Samples ``[start, start + n)`` (``n`` 0: to the end) at ``sr``."""
        if self.wave is not None:
            return self.wave[start : start + n if n else None]
        assert self.path is not None
        if start == 0 and not n:
            return load_audio(self.path, sr, self.where, self.offset, self.duration)
        return load_audio(self.path, sr, self.where, (self.offset or 0.0) + start / sr, n / sr)


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
    nbest: list[tuple[float, str]]


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
        workers: int = 0,
        snap: Snap | None = None,
    ) -> None:
        if chunk_seconds and not 0 <= overlap_seconds < chunk_seconds / 2:
            raise CtcasrError(f"overlap ({overlap_seconds} s) must be >= 0 and less than half "
                              f"the chunk ({chunk_seconds} s)")
        self.engine = engine
        self.info = engine.info
        self.tokenizer = engine.info.tokenizer
        self.settings = engine.info.decoding if settings is None else settings
        self.decoder = make_decoder(self.settings.decoder, self.settings.options, self.tokenizer)
        self.text_of = output_text(self.decoder, self.tokenizer)[0]  # tokens -> text
        self.nbest = self.settings.options.nbest
        self.timestamps = timestamps
        self.snap = snap  # word edges to the audio's pauses (with timestamps)
        self.sr = self.info.features.sample_rate
        self.out_hop = self.info.subsampling * window_hop(self.info.features)[1]  # per frame
        # 0: never in windows
        self.window = max(round(chunk_seconds * self.sr), 2 * engine.min_samples) \
            if chunk_seconds else 0
        self.stride_out = max(1, round((chunk_seconds - overlap_seconds) / self.info.frame_s))
        self.stride = self.stride_out * self.out_hop
        self.batch_samples = max(round(batch_seconds * self.sr), self.window)
        self.max_batch = max_batch
        self.workers = workers
        self.chunk_seconds, self.overlap_seconds = chunk_seconds, overlap_seconds

    @property
    def max_unchunked_seconds(self) -> float:
        """Inputs up to this long are decoded in one pass (inf: every input)."""
        return self.window / self.sr if self.window else float("inf")

    @property
    def streams(self) -> bool:
        """Whether :meth:`stream` works: a checkpoint whose every output frame depends on
        no later audio than its chunk (see :mod:`ctcasr.infer.stream`)."""
        return stream_problem(self.engine) is None

    # ----------------------------------------------------------------------- public API
    def transcribe(self, audio: Any, sample_rate: int | None = None, name: str = "<array>",
                   hotwords: Any = None) -> Transcript | list[Transcript]:
        """A path, an array or tensor (``[samples]`` or ``[samples, channels]``, at
        ``sample_rate``), or a list of these -> a :class:`Transcript` (a list for a list).
        ``hotwords``: phrases to prefer for this call (see :meth:`with_hotwords`)."""
        if hotwords is not None:
            return self.with_hotwords(hotwords).transcribe(audio, sample_rate, name)
        if isinstance(audio, (list, tuple)):
            return list(self.transcribe_iter(self.source(a, sample_rate, f"{name}[{i}]")
                                             for i, a in enumerate(audio)))
        return next(self.transcribe_iter([self.source(audio, sample_rate, name)]))

    def with_hotwords(self, hotwords: Any) -> Transcriber:
        """This transcriber, decoding with ``hotwords`` (a hotwords file, or phrases) instead of
        its own (the engine is shared)."""
        return self.with_settings(self.settings.override(hotwords=hotword_list(hotwords)))

    def with_settings(self, settings: DecodeSettings) -> Transcriber:
        """This transcriber, decoding as ``settings`` say (the engine is shared)."""
        return Transcriber(self.engine, settings, self.timestamps, self.chunk_seconds,
                           self.overlap_seconds, self.batch_samples / self.sr, self.max_batch,
                           self.workers, self.snap)

    def stream(self, name: str = "<stream>", chunk_size: int = 0, left_chunks: int = -1,
               endpoint: Endpoint | None = None) -> Stream:
        """Recognition as the audio arrives (a streaming model: :mod:`ctcasr.infer.stream`);
        ``chunk_size`` > 0 sets a chunked-attention model's chunk (for the whole model);
        ``endpoint`` splits the stream into segments at pauses."""
        return Stream(self.engine, self.decoder, self.text_of, self.timestamps, name, chunk_size,
                      left_chunks, endpoint)

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

    def transcribe_iter(self, sources: Iterable[Source],
                        on_error: OnError = None) -> Iterator[Transcript]:
        """Transcripts in input order. A bad input raises, or with ``on_error`` is handed to
        it and left out."""
        sources = iter(sources)
        while chunk := list(itertools.islice(sources, CHUNK)):
            yield from self._chunk(chunk, on_error)

    def log_prob_batches(self, sources: list[Source], on_error: OnError = None
                         ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """The whole-input pass behind :meth:`transcribe_iter`: batches of ``sources`` (none
        longer than a window) through the engine, as (positions in ``sources``, log-probs
        ``[B, T, V]`` zero-padded, their lengths ``[B]``)."""
        lengths = self._lengths(sources, on_error)
        if not lengths:
            return
        sampler = BucketBatchSampler([max(n, 1) for n in lengths.values()], self.batch_samples,
                                     self.max_batch)
        order = list(lengths)
        with ThreadPoolExecutor(self.workers) if self.workers else _Inline() as pool:
            for batch in sampler.batches(0):
                idx = [order[b] for b in batch]
                waves = dict(zip(idx, pool.map(lambda i: _read(sources[i], self.sr), idx),
                                 strict=True))
                for i in idx:
                    if isinstance(waves[i], CtcasrError):
                        _fail(waves[i], on_error)
                kept = [i for i in idx if isinstance(waves[i], torch.Tensor)]
                if not kept:
                    continue
                lps = self.engine.log_probs([self._padded(waves[i]) for i in kept])
                lens = torch.tensor([lp.shape[0] for lp in lps])
                yield kept, pad_sequence(lps, batch_first=True), lens

    # ----------------------------------------------------------------------- internals
    def _lengths(self, sources: list[Source], on_error: OnError) -> dict[int, int]:
        lengths: dict[int, int] = {}
        for i, s in enumerate(sources):
            try:
                lengths[i] = s.num_samples(self.sr)
            except CtcasrError as e:
                _fail(e, on_error)
        return lengths

    def _chunk(self, chunk: list[Source], on_error: OnError) -> Iterator[Transcript]:
        lengths = self._lengths(chunk, on_error)
        long = {i for i, n in lengths.items() if self.window and n > self.window}
        short = [i for i in lengths if i not in long]
        done: dict[int, Transcript] = {}
        for kept, lps, lens in self.log_prob_batches([chunk[i] for i in short], on_error):
            pieces = self._decode_batch(lps, lens, 0)
            for k, piece in zip(kept, pieces, strict=True):
                i = short[k]
                done[i] = self._snapped(self._transcript(chunk[i].name, lengths[i], [piece]),
                                        chunk[i])
        for i in sorted(lengths):
            if i in long:
                try:
                    done[i] = self._long(chunk[i], lengths[i])
                except CtcasrError as e:
                    _fail(e, on_error)
            if i in done:
                yield done.pop(i)

    def _long(self, src: Source, total: int) -> Transcript:
        pieces = []
        for cut, lp in self._windows(src, total):
            pieces += self._decode_batch(lp[None], torch.tensor([lp.shape[0]]), cut)
        return self._snapped(self._transcript(src.name, total, pieces), src)

    def _snapped(self, t: Transcript, src: Source) -> Transcript:
        """``t`` with its word edges moved to the pauses of ``src`` (with ``snap``)."""
        if self.snap is None or not t.words:
            return t
        spans = snap_spans([(w.start, w.end) for w in t.words], level(src, self.sr), self.snap)
        for w, new in zip(t.words, spans, strict=True):
            if new is not None:
                w.start, w.end = new
        return t

    def _windows(self, src: Source, total: int) -> Iterator[tuple[int, torch.Tensor]]:
        """A long input's log-probs piece by piece, (its first output frame, ``[n, V]``): the
        windows of the module doc, cut between them at a blank."""
        starts = list(range(0, max(total - self.window, 0) + self.stride, self.stride))
        per_batch = max(1, self.batch_samples // self.window)
        overlap = round(self.window / self.out_hop) - self.stride_out  # output frames
        cut = 0  # the output frame where the next piece starts
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
                yield cut, lp[cut - first : end - first]
                cut = end

    def log_probs_of(self, src: Source) -> torch.Tensor:
        """The whole input's log-probs ``[T, V]`` (a long one: its windows' pieces joined)."""
        total = src.num_samples(self.sr)
        if not self.window or total <= self.window:
            return self.engine.log_probs([self._padded(src.read(self.sr))])[0]
        return torch.cat([lp for _, lp in self._windows(src, total)])

    def _padded(self, wave: torch.Tensor) -> torch.Tensor:
        """Zero-pad a waveform too short for the front end (silence decodes to nothing)."""
        short = self.engine.min_samples - wave.shape[0]
        return torch.nn.functional.pad(wave, (0, short)) if short > 0 else wave

    def _decode_batch(self, lps: torch.Tensor, lens: torch.Tensor,
                      first_frame: int) -> list[_Piece]:
        """Decode a batch of log-probs ``[B, T, V]``; word times start at ``first_frame``."""
        return [self._piece(lp[:n], nbest, first_frame)
                for lp, n, nbest in zip(lps, lens.tolist(), self.decoder(lps, lens),
                                        strict=True)]

    def _piece(self, lp: torch.Tensor, nbest: list[Hypothesis], first_frame: int) -> _Piece:
        best = nbest[0]
        words = []
        if self.timestamps:
            words = word_times(lp, best.tokens, self.tokenizer, self.info.frame_s,
                               self.text_of(best.tokens))
            shift = first_frame * self.info.frame_s
            for w in words:
                w.start, w.end = w.start + shift, w.end + shift
        texts = [(h.score, self.text_of(h.tokens)) for h in nbest] if self.nbest > 1 else []
        return _Piece(best.tokens, words, texts)

    def _transcript(self, name: str, samples: int, pieces: list[_Piece]) -> Transcript:
        tokens = [t for p in pieces for t in p.tokens]
        words = [w for p in pieces for w in p.words]
        conf = sum(w.confidence for w in words) / len(words) if words else None
        nbest = pieces[0].nbest if len(pieces) == 1 else []
        return Transcript(name, self.text_of(tokens), samples / self.sr, words, conf,
                          nbest=nbest)


class _Inline:
    """``ThreadPoolExecutor``'s ``map`` in this thread (``workers`` 0)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    @staticmethod
    def map(fn: Callable, items: Iterable) -> Iterator:
        return map(fn, items)


def level(src: Source, sr: int, piece_s: float = 60.0) -> torch.Tensor:
    """The source's level track (:func:`ctcasr.decode.pauses.frame_db`), read a minute at a
    time so that an hour-long file is never in memory twice."""
    total, hop = src.num_samples(sr), round(sr * HOP_S)
    step = hop * max(1, round(piece_s / HOP_S))
    return torch.cat([frame_db(src.read(sr, start, min(step, total - start)), sr)
                      for start in range(0, total, step)] or [torch.empty(0)])


def _read(src: Source, sr: int) -> torch.Tensor | CtcasrError:
    """The source's samples, or what is wrong with it (handled in the caller's thread)."""
    try:
        return src.read(sr)
    except CtcasrError as e:
        return e


def _fail(e: CtcasrError, on_error: OnError) -> None:
    if on_error is None:
        raise e
    on_error(e)


__all__ = ["CHUNK", "Source", "Transcriber", "Transcript", "expand_inputs"]
