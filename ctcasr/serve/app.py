"""The recognition server: a Starlette app (run by uvicorn) around one loaded model.

- ``GET /``: the page (``static/index.html``: microphone and file upload, no build step);
- ``GET /healthz``: ``{"status": "ok", "model", "sample_rate", "streaming"}``;
- ``POST /v1/transcribe``: an audio file as the request body (any format soundfile reads, any
  rate) -> the transcript as JSON (text, duration, confidence, words with start / end);
- ``WS /v1/stream``: a JSON start message ``{"type": "start", "sample_rate": SR, "format":
  "s16le" | "f32le"}`` (SR: the model's rate), then binary messages of PCM samples, then
  ``{"type": "stop"}``; the server sends ``{"type": "partial", "text", "audio_s", "segment"}``
  (the open segment's text, the seconds of audio it covers) as results change and ``{"type":
  "final", ...transcript, "start", "segment", "last", "compute_s"}`` when a segment ends: at a
  pause (the :class:`~ctcasr.infer.stream.Endpoint` rule; ``start`` and word times are seconds
  from the start of the stream) and at the stop, whose final has ``"last": true`` (its text is
  empty when nothing was said after the last pause). ``compute_s``: seconds the stream spent in
  or waiting for the decoder. Errors are ``{"type": "error", "error"}`` followed by a close with
  a WebSocket code (1003 bad data, 1008 a limit, 1009 too big, 1013 too many streams).

The model is loaded once. Decoding runs in worker threads off the event loop (``workers`` at a
time, 1 by default: torch already uses the cores), each stream's chunks in arrival order, so
concurrent streams take turns. A streaming model (:mod:`ctcasr.infer.stream`) decodes each chunk
as it comes; any other model is re-decoded on the open segment's audio at most every
``partial_seconds`` of new audio, and once more at its end; its endpoint is read from the word
times of that re-decode (``silence_s`` after the last word). Limits (:class:`Limits`) answer with
HTTP 413 / 415 / 503 or the close codes above; a client that vanishes frees its stream and
nothing else notices. Nothing a client sends is used as a path.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import soundfile as sf
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ctcasr.errors import CtcasrError, first_line
from ctcasr.infer.stream import Endpoint
from ctcasr.infer.transcriber import Transcriber
from ctcasr.infer.transcript import Transcript
from ctcasr.serve.formats import FORMATS, render

log = logging.getLogger("ctcasr.serve")
PAGE = Path(__file__).parent / "static" / "index.html"
PCM_FORMATS = {"s16le": (np.int16, 1 / 32768.0), "f32le": (np.float32, 1.0)}


@dataclass(frozen=True)
class Limits:
    max_upload_mb: float = 50.0  # POST /v1/transcribe body
    max_stream_seconds: float = 600.0  # audio per WebSocket stream
    max_message_kb: float = 1024.0  # one WebSocket message
    max_streams: int = 8  # WebSocket streams at once
    workers: int = 1  # decoding threads
    partial_seconds: float = 1.0  # full-context models: new audio between partial results


@dataclass
class Upload:
    data: np.ndarray  # [samples, channels]
    rate: int
    hotwords: list[str] | None  # this request's (None: the server's)
    fields: dict[str, str]  # a form's text fields


class ClientError(Exception):
    """What a client did wrong: sent as an error message, then the stream closes."""

    def __init__(self, message: str, code: int = 1003) -> None:
        super().__init__(message)
        self.code = code


def create_app(asr: Transcriber, limits: Limits = Limits(), name: str = "model",
               endpoint: Endpoint | None = Endpoint()) -> Starlette:
    """``endpoint`` None: one segment per stream, ended by the stop message."""
    server = Server(asr, limits, name, endpoint)
    return Starlette(routes=[Route("/", server.page), Route("/healthz", server.healthz),
                             Route("/v1/transcribe", server.transcribe, methods=["POST"]),
                             Route("/v1/audio/transcriptions", server.openai_transcriptions,
                                   methods=["POST"]),
                             WebSocketRoute("/v1/stream", server.stream)])


def run_server(app: Starlette, host: str, port: int, limits: Limits,
               certfile: Path | None = None, keyfile: Path | None = None,
               banner: str = "serving") -> None:
    """Run ``app`` with uvicorn until Ctrl-C (HTTPS with ``certfile`` and ``keyfile``)."""
    import uvicorn

    if (certfile is None) != (keyfile is None):
        raise CtcasrError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
    for f in (certfile, keyfile):
        if f is not None and not f.is_file():
            raise CtcasrError(f"{f}: no such file")
    scheme = "https" if certfile else "http"
    print(f"{banner} at {scheme}://{host}:{port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", ws="websockets-sansio",
                ws_max_size=int(4 * limits.max_message_kb * 1024),
                ssl_certfile=str(certfile) if certfile else None,
                ssl_keyfile=str(keyfile) if keyfile else None)


class Server:
    """The routes' handlers around one model; ``streams`` counts the open WebSocket streams."""

    def __init__(self, asr: Transcriber, limits: Limits, name: str,
                 endpoint: Endpoint | None) -> None:
        self.asr, self.limits, self.name, self.endpoint = asr, limits, name, endpoint
        self.sr = asr.info.features.sample_rate
        self.streaming = asr.streams  # else its segments are re-decoded
        self.worker = anyio.CapacityLimiter(limits.workers)
        self.streams = 0

    async def run(self, fn, *args):
        """``fn(*args)`` in a decoding thread (``limits.workers`` at a time)."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.worker)

    async def page(self, request: Request) -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    async def healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": self.name, "sample_rate": self.sr,
                             "streaming": self.streaming, "streams": self.streams})

    async def transcribe(self, request: Request) -> Response:
        """The audio as the request body or a form's ``file`` field -> the transcript."""
        upload = await self.upload(request)
        if isinstance(upload, Response):
            return upload
        try:
            result = await self.run(self.asr.transcribe, upload.data, upload.rate, "upload",
                                    upload.hotwords)
        except CtcasrError as e:
            return error(422, str(e))
        return JSONResponse(result.to_dict())

    async def openai_transcriptions(self, request: Request) -> Response:
        """``POST /v1/audio/transcriptions`` as OpenAI-style clients send it: a form with
        ``file`` and ``response_format`` (other fields are accepted and ignored)."""
        upload = await self.upload(request, form_only=True)
        if isinstance(upload, Response):
            return upload
        fmt = upload.fields.get("response_format") or "json"
        if fmt not in FORMATS:
            return error(400, f"response_format {fmt!r}: choose {', '.join(FORMATS)}")
        try:
            t = await self.run(self.asr.transcribe, upload.data, upload.rate, "upload",
                               upload.hotwords)
        except CtcasrError as e:
            return error(422, str(e))
        body, media = render(t, fmt)
        if isinstance(body, dict):
            return JSONResponse(body)
        return Response(body, media_type=media)

    async def upload(self, request: Request, form_only: bool = False) -> Upload | Response:
        """The audio of a request (its body, or a form's ``file``), or the error response."""
        cap = int(self.limits.max_upload_mb * 2**20)
        too_big = f"the upload is over the limit of {self.limits.max_upload_mb:g} MB"
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return error(413, too_big)
        fields: dict[str, str] = {}
        hotwords = request.query_params.getlist("hotwords") or None
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=1, max_fields=50, max_part_size=cap)
            except Exception as e:  # python-multipart's and Starlette's errors  # noqa: BLE001
                return error(413 if "exceed" in str(e).lower() else 400,
                             f"a malformed form upload ({first_line(e)})")
            file = form.get("file")
            if file is None or isinstance(file, str):
                return error(400, "the form has no 'file' field with the audio")
            body = await file.read()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            if fields.get("hotwords"):
                hotwords = [h for h in fields["hotwords"].splitlines() if h.strip()]
        elif form_only:
            return error(400, "send a multipart form with the audio in its 'file' field")
        else:
            body = bytearray()
            async for part in request.stream():
                body += part
                if len(body) > cap:
                    return error(413, too_big)
        if not body:
            return error(400, "send the audio file as the request body, or as a form's 'file'")
        if len(body) > cap:
            return error(413, too_big)
        try:
            data, rate = sf.read(io.BytesIO(bytes(body)), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
            return error(415, f"not audio that soundfile reads ({_reason(e)})")
        if data.shape[0] == 0:
            return error(415, "the audio file holds no samples")
        return Upload(data, rate, hotwords, fields)

    async def stream(self, ws: WebSocket) -> None:
        await ws.accept()
        if self.streams >= self.limits.max_streams:
            await close_with(ws, ClientError(f"busy: {self.limits.max_streams} streams already; "
                                             "try again later", 1013))
            return
        self.streams += 1
        try:
            await StreamSession(self, ws).run()
        except WebSocketDisconnect:
            log.info("a client left mid-stream")
        except ClientError as e:
            await close_with(ws, e)
        finally:
            self.streams -= 1


class StreamSession:
    """One WebSocket stream: the start message, audio messages, the stop (module doc)."""

    def __init__(self, server: Server, ws: WebSocket) -> None:
        self.server, self.ws = server, ws
        self.samples, self.compute, self.segments = 0, 0.0, 0

    async def run(self) -> None:
        srv = self.server
        dtype, scale, hotwords = parse_start((await self.receive()).get("text"), srv.sr)
        try:
            asr = srv.asr.with_hotwords(hotwords) if hotwords is not None else srv.asr
        except CtcasrError as e:
            raise ClientError(f"hotwords: {e}") from None
        decoding = (Live(asr, srv.endpoint) if srv.streaming
                    else Redecode(asr, srv.sr, srv.limits.partial_seconds, srv.endpoint))
        while True:
            msg = await self.receive()
            if msg.get("text") is not None:
                if _json(msg["text"]).get("type") != "stop":
                    raise ClientError('expected binary audio or {"type": "stop"}')
                finals = await self.timed(decoding.finish)
                for k, t in enumerate(finals):
                    await self.send_final(t, k == len(finals) - 1)
                await self.ws.close(1000)
                return
            chunk = self.audio(msg.get("bytes") or b"", dtype, scale)
            finals, text = await self.timed(decoding.accept, chunk)
            for t in finals:
                await self.send_final(t, False)
            if text is not None:
                await self.ws.send_json({"type": "partial", "text": text,
                                         "audio_s": round(self.samples / srv.sr, 4),
                                         "segment": self.segments})

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
        await self.ws.send_json({"type": "final", **t.to_dict(), "start": round(t.start, 3),
                                 "segment": self.segments, "last": last,
                                 "compute_s": round(self.compute, 4)})
        self.segments += 1

    async def receive(self) -> dict[str, Any]:
        msg = await self.ws.receive()
        if msg["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(msg.get("code", 1000))
        return msg


def parse_start(text: str | None, sr: int) -> tuple[Any, float, list[str] | None]:
    """The (dtype, scale) of the stream's PCM and its hotwords (None: the server's), from its
    start message."""
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
    if fmt not in PCM_FORMATS:
        raise ClientError(f"format {fmt!r}: choose {', '.join(PCM_FORMATS)}")
    hotwords = start.get("hotwords")
    if hotwords is not None and (not isinstance(hotwords, list) or len(hotwords) > 1000
                                 or not all(isinstance(h, str) for h in hotwords)):
        raise ClientError("hotwords must be a list of at most 1000 phrases (strings)")
    return (*PCM_FORMATS[fmt], hotwords)


def _json(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except ValueError:
        raise ClientError("a text message must be JSON") from None
    if not isinstance(obj, dict):
        raise ClientError("a text message must be a JSON object")
    return obj


def _reason(e: Exception) -> str:
    """libsndfile's reason, without the Python object it names ("Error opening <...>: ")."""
    text = first_line(e)
    return text.rsplit(": ", 1)[-1].strip() if ": " in text else text


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def close_with(ws: WebSocket, e: ClientError) -> None:
    try:
        await ws.send_json({"type": "error", "error": str(e)})
        await ws.close(e.code)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client is gone already


class Live:
    """A streaming model: each chunk decoded as it comes."""

    def __init__(self, asr: Transcriber, endpoint: Endpoint | None) -> None:
        self.stream, self.text, self.sent = asr.stream("stream", endpoint=endpoint), "", 0

    def accept(self, chunk: np.ndarray) -> tuple[list[Transcript], str | None]:
        """(the segments closed by this chunk, the open segment's text if it changed)"""
        text = self.stream.accept(chunk, self.stream.sr).text
        finals = self._closed()
        changed, self.text = text != self.text or bool(finals), text
        return finals, text if changed and text else None

    def finish(self) -> list[Transcript]:
        last = self.stream.finish()
        return self._closed() + [last]

    def _closed(self) -> list[Transcript]:
        new = self.stream.segments[self.sent :]
        self.sent = len(self.stream.segments)
        return new


class Redecode:
    """A full-context model: the open segment's audio decoded every ``every`` seconds of new
    audio; the segment ends ``endpoint.silence_s`` after its last word (or when it is
    ``max_segment_s`` long); audio with no word in it is let go after ``silence_s``."""

    def __init__(self, asr: Transcriber, sr: int, every: float,
                 endpoint: Endpoint | None) -> None:
        self.asr, self.sr, self.every = asr, sr, max(1, round(every * sr))
        self.endpoint = endpoint
        self.chunks: list[np.ndarray] = []
        self.start = self.samples = self.decoded = 0  # in samples: the segment's start, ...
        self.text = ""

    def accept(self, chunk: np.ndarray) -> tuple[list[Transcript], str | None]:
        self.chunks.append(chunk)
        self.samples += len(chunk)
        if self.samples - self.decoded < self.every:
            return [], None
        self.decoded = self.samples
        t = self._transcribe()
        ep, length = self.endpoint, (self.samples - self.start) / self.sr
        if ep is not None and t.text:
            quiet = self.samples / self.sr - t.words[-1].end if t.words else 0.0
            if quiet >= ep.silence_s or length >= ep.max_segment_s:
                self.chunks, self.start, self.text = [], self.samples, ""
                return [t], None
        elif ep is not None and length >= ep.silence_s:  # nothing said: keep the last 0.5 s
            audio = np.concatenate(self.chunks)[-self.sr // 2 :]
            self.chunks, self.start = [audio], self.samples - len(audio)
        changed, self.text = t.text != self.text, t.text
        return [], t.text if changed else None

    def finish(self) -> list[Transcript]:
        return [self._transcribe()]

    def _transcribe(self) -> Transcript:
        # (no audio at all: one silent sample; transcribe pads what is too short)
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(1, np.float32)
        t = self.asr.transcribe(audio, self.sr, "stream")
        start = self.start / self.sr
        t.words = [replace(w, start=w.start + start, end=w.end + start) for w in t.words]
        t.duration, t.start = (self.samples - self.start) / self.sr, start
        return t
