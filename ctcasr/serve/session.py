"""One WebSocket stream of ``ctcasr serve``: its start message, its audio, its stop, and the
two ways of decoding it (:class:`Live` for a streaming model, :class:`Redecode` for the
others). The protocol is in :mod:`ctcasr.serve.app`'s doc and docs/serving.md."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from ctcasr.errors import CtcasrError
from ctcasr.infer.stream import Endpoint
from ctcasr.infer.transcriber import Transcriber
from ctcasr.infer.transcript import Transcript

if TYPE_CHECKING:
    from ctcasr.serve.app import Server

PCM_FORMATS = {"s16le": (np.int16, 1 / 32768.0), "f32le": (np.float32, 1.0)}


class ClientError(Exception):
    """What a client did wrong: sent as an error message, then the stream closes."""

    def __init__(self, message: str, code: int = 1003) -> None:
        super().__init__(message)
        self.code = code


class StreamSession:
    """One WebSocket stream: the start message, audio messages, the stop (module doc). Each
    wait is bounded: the start message within ``limits.start_seconds``, every later message
    within ``limits.idle_seconds``, every message sent within ``limits.send_seconds`` (a client
    that stops reading is dropped); when the server drains (shutdown), the stream's audio so
    far is decoded, its final sent, and it closes normally."""

    def __init__(self, server: Server, ws: WebSocket) -> None:
        self.server, self.ws = server, ws
        self.samples, self.compute, self.segments = 0, 0.0, 0
        self.busy, self.failure = False, None  # a decoding step running; what ended the stream

    async def run(self) -> None:
        srv = self.server
        first = await self.receive(srv.limits.start_seconds, "the start message")
        if first is None:
            raise ClientError("the server is shutting down", 1001)
        self.start = start = parse_start(first.get("text"), srv.sr)
        srv.check_key(self.ws.headers, start.api_key)
        try:
            asr = srv.asr.with_hotwords(start.hotwords) if start.hotwords is not None \
                else srv.asr
        except CtcasrError as e:
            raise ClientError(f"hotwords: {e}") from None
        decoding = (Live(asr, srv.endpoint) if srv.streaming
                    else Redecode(asr, srv.sr, srv.limits.partial_seconds, srv.endpoint))
        async with anyio.create_task_group() as tg:
            try:
                await self.listen(decoding, tg)
            except Exception as e:  # noqa: BLE001 (raised below, once the decoder is done)
                self.failure = self.failure or e
                tg.cancel_scope.cancel()
        if self.failure is not None:
            raise self.failure
        finals = await self.timed(decoding.finish)
        for k, t in enumerate(finals):
            await self.send_final(t, k == len(finals) - 1)
        await self.ws.close(1000)

    async def listen(self, decoding: Live | Redecode, tg: anyio.abc.TaskGroup) -> None:
        """Take audio until the stop message (or the drain), starting a decoding step
        whenever one is due and none is running."""
        srv = self.server
        while True:
            msg = await self.receive(srv.limits.idle_seconds, "audio or the stop message")
            if msg is None or msg.get("text") is not None:  # (None: the server drains)
                if msg is not None and _json(msg["text"]).get("type") != "stop":
                    raise ClientError('expected binary audio or {"type": "stop"}')
                return
            start = self.start
            decoding.add(self.audio(msg.get("bytes") or b"", start.dtype, start.scale))
            if not self.busy and decoding.due():
                self.busy = True
                tg.start_soon(self.decode, decoding, tg)

    async def decode(self, decoding: Live | Redecode, tg: anyio.abc.TaskGroup) -> None:
        """Decoding steps while one is due, each on all the audio taken so far: when the
        decoder is behind, the audio that came meanwhile is decoded in one step (partials
        thin out; the stream never queues work it cannot catch up with)."""
        try:
            while decoding.due():
                finals, text, covered = await self.timed(decoding.step)
                for t in finals:
                    await self.send_final(t, False)
                if text is not None:
                    await self.send({"type": "partial", "text": text,
                                     "audio_s": round(covered / self.server.sr, 4),
                                     "segment": self.segments})
        except Exception as e:  # noqa: BLE001 (the stream ends with it: run raises it)
            self.failure = self.failure or e
            tg.cancel_scope.cancel()
        finally:
            self.busy = False

    def audio(self, data: bytes, dtype: Any, scale: float) -> np.ndarray:
        """A binary message's samples, within the limits."""
        limits, sr = self.server.limits, self.server.sr
        if len(data) > limits.max_message_kb * 1024:
            raise ClientError(f"a message of {len(data)} bytes is over the limit of "
                              f"{limits.max_message_kb:g} KB", 1009)
        width = np.dtype(dtype).itemsize
        if len(data) % width:
            raise ClientError(f"{len(data)} bytes is not a whole number of {width}-byte "
                              "samples")
        chunk = np.frombuffer(data, dtype=dtype).astype(np.float32) * scale
        self.samples += len(chunk)
        if self.samples > limits.max_stream_seconds * sr:
            raise ClientError(f"the stream is over the limit of {limits.max_stream_seconds:g}"
                              " s of audio", 1008)
        if not np.isfinite(chunk).all():
            raise ClientError("the audio holds NaN or infinite samples")
        return chunk

    async def timed(self, fn, *args):
        t = time.perf_counter()
        out = await self.server.run(fn, *args)
        self.compute += time.perf_counter() - t  # includes waiting for the worker: what a
        return out  # stream costs under load

    async def send_final(self, t: Transcript, last: bool) -> None:
        await self.send({"type": "final", **t.to_dict(), "start": round(t.start, 3),
                         "segment": self.segments, "last": last,
                         "compute_s": round(self.compute, 4)})
        self.segments += 1

    async def send(self, message: dict[str, Any]) -> None:
        """Send, or drop the client when it does not take the message in time."""
        with anyio.move_on_after(self.server.limits.send_seconds) as scope:
            await self.ws.send_json(message)
        if scope.cancelled_caught:
            raise WebSocketDisconnect(1008, "the client does not read")

    async def receive(self, seconds: float, what: str) -> dict[str, Any] | None:
        """The next message within ``seconds``; None when the server starts draining."""
        async with anyio.create_task_group() as tg:
            got: list[dict[str, Any] | None] = []

            async def message() -> None:
                with anyio.move_on_after(seconds):
                    got.append(await self.ws.receive())
                tg.cancel_scope.cancel()

            async def drain() -> None:
                await self.server.draining.wait()
                got.append(None)
                tg.cancel_scope.cancel()

            tg.start_soon(message)
            tg.start_soon(drain)
        if not got:
            raise ClientError(f"nothing within {seconds:g} s: expected {what}", 1008)
        msg = got[0]
        if msg is not None and msg["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(msg.get("code", 1000))
        return msg


@dataclass(frozen=True)
class Start:
    """What a stream's start message says."""

    dtype: Any
    scale: float
    hotwords: list[str] | None  # None: the server's
    api_key: str | None  # when the server asks for one and no header carried it


def parse_start(text: str | None, sr: int) -> Start:
    """What the stream's start message asks for (raises ClientError naming what is wrong)."""
    if text is None:
        raise ClientError('the first message must be the JSON start message {"type": "start", '
                          f'"sample_rate": {sr}, "format": "s16le"}}')
    start = _json(text)
    if start.get("type") != "start":
        raise ClientError('the first message must have "type": "start"')
    rate = start.get("sample_rate")
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise ClientError(f"sample_rate must be an integer (this model's is {sr}), got {rate!r}")
    if rate != sr:
        raise ClientError(f"sample_rate {rate}: this model takes {sr} Hz (resample before "
                          "sending; the page does)")
    fmt = start.get("format", "s16le")
    if not isinstance(fmt, str) or fmt not in PCM_FORMATS:
        raise ClientError(f"format {fmt!r}: choose {', '.join(PCM_FORMATS)}")
    hotwords = start.get("hotwords")
    if hotwords is not None and (not isinstance(hotwords, list) or len(hotwords) > 1000
                                 or not all(isinstance(h, str) for h in hotwords)):
        raise ClientError("hotwords must be a list of at most 1000 phrases (strings)")
    key = start.get("api_key")
    if key is not None and not isinstance(key, str):
        raise ClientError("api_key must be a string")
    return Start(*PCM_FORMATS[fmt], hotwords, key)


def _json(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError:
        raise ClientError("a text message must be JSON") from None
    if not isinstance(obj, dict):
        raise ClientError("a text message must be a JSON object")
    return obj


async def close_with(ws: WebSocket, e: ClientError) -> None:
    try:
        await ws.send_json({"type": "error", "error": str(e)})
        await ws.close(e.code)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client is gone already


class _Audio:
    """Audio taken on the event loop while a worker thread decodes what came before."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chunks: list[np.ndarray] = []
        self.samples = 0  # taken since the stream began

    def add(self, chunk: np.ndarray) -> None:
        with self.lock:
            self.chunks.append(chunk)
            self.samples += len(chunk)

    def held(self) -> tuple[np.ndarray, int, int]:
        """(the audio held, how many chunks it is, the stream's samples at its end)"""
        with self.lock:
            n, end = len(self.chunks), self.samples
            audio = np.concatenate(self.chunks) if n else np.zeros(0, np.float32)
        return audio, n, end

    def let_go(self, n: int, keep: np.ndarray | None = None) -> None:
        """Drop the first ``n`` chunks (those :meth:`held` returned), keeping ``keep``."""
        with self.lock:
            self.chunks = ([keep] if keep is not None and len(keep) else []) + self.chunks[n:]


class Live(_Audio):
    """A streaming model: the chunks taken since the last step fed to the stream."""

    def __init__(self, asr: Transcriber, endpoint: Endpoint | None) -> None:
        super().__init__()
        self.stream, self.text, self.sent = asr.stream("stream", endpoint=endpoint), "", 0

    def due(self) -> bool:
        return bool(self.chunks)

    def step(self) -> tuple[list[Transcript], str | None, int]:
        """(the segments closed, the open segment's text if it changed, samples decoded)"""
        with self.lock:
            chunks, self.chunks, end = self.chunks, [], self.samples
        for chunk in chunks:  # one by one: the endpoint rule looks at each as it comes
            text = self.stream.accept(chunk, self.stream.sr).text
        finals = self._closed()
        changed, self.text = text != self.text or bool(finals), text
        return finals, text if changed and text else None, end

    def finish(self) -> list[Transcript]:
        if self.due():
            self.step()
        last = self.stream.finish()
        return self._closed() + [last]

    def _closed(self) -> list[Transcript]:
        new = self.stream.segments[self.sent :]
        self.sent = len(self.stream.segments)
        return new


class Redecode(_Audio):
    """A full-context model: the open segment's audio decoded greedily at each step, at most
    every ``every`` seconds of new audio (a partial). A segment ends at a pause of
    ``endpoint.silence_s`` after a word (cut half that after the word, wherever the step's
    audio ends: a step may hold several pauses) or when it is ``max_segment_s`` long (without
    word times too), and is decoded once more as ``asr`` decodes (the model's carried beam
    search and LM: the final); audio with no word in it is let go after ``silence_s``.
    Partials are greedy because each re-decodes the whole open segment: with beam + LM, four
    real-time streams already outran two cores."""

    def __init__(self, asr: Transcriber, sr: int, every: float,
                 endpoint: Endpoint | None) -> None:
        super().__init__()
        self.asr, self.sr, self.every = asr, sr, max(1, round(every * sr))
        self.partial = asr if asr.settings.decoder == "greedy" else \
            asr.with_settings(asr.settings.override(decoder="greedy", hotwords=()))
        self.endpoint = endpoint
        self.start = self.decoded = 0  # in samples: the open segment's start, the last step's end
        self.text = ""

    def due(self) -> bool:
        return self.samples - self.decoded >= self.every

    def step(self) -> tuple[list[Transcript], str | None, int]:
        """(the segments closed; the open segment's text if it changed; samples decoded)"""
        audio, n, end = self.held()
        self.decoded, finals = end, []
        while True:
            t = self._transcribe(self.partial, audio, end)
            cut = self._cut(t, end)
            if cut is None:
                break
            head = audio[: cut - self.start]
            finals.append(t if cut == end and self.partial is self.asr
                          else self._transcribe(self.asr, head, cut))
            audio, self.start, self.text = audio[cut - self.start :], cut, ""
        if self.endpoint is not None and not t.text \
                and end - self.start >= self.endpoint.silence_s * self.sr:
            audio = audio[-(self.sr // 2) :]  # nothing said: keep the last 0.5 s
            self.start = end - len(audio)
        self.let_go(n, audio)
        if not t.text and finals:
            return finals, None, end
        changed, self.text = t.text != self.text, t.text
        return finals, t.text if changed else None, end

    def _cut(self, t: Transcript, end: int) -> int | None:
        """Where the open segment ends (samples from the stream's start), if it does."""
        ep, sr = self.endpoint, self.sr
        if ep is None or not t.text:
            return None
        if t.words:  # half a pause after the word before it, however much audio came after
            nexts = [w.start for w in t.words[1:]] + [end / sr]
            for w, after in zip(t.words, nexts, strict=True):
                if after - w.end >= ep.silence_s:
                    return min(end, round((w.end + ep.silence_s / 2) * sr))
        return end if end - self.start >= ep.max_segment_s * sr else None

    def finish(self) -> list[Transcript]:
        audio, _, end = self.held()
        return [self._transcribe(self.asr, audio, end)]

    def _transcribe(self, asr: Transcriber, audio: np.ndarray, end: int) -> Transcript:
        """``audio``: the open segment up to ``end`` (samples from the stream's start)."""
        # (no audio at all: one silent sample; transcribe pads what is too short)
        t = asr.transcribe(audio if len(audio) else np.zeros(1, np.float32), self.sr, "stream")
        start = self.start / self.sr
        t.words = [replace(w, start=w.start + start, end=w.end + start) for w in t.words]
        t.duration, t.start = (end - self.start) / self.sr, start
        return t
