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
time, 1 by default: torch already uses the cores); concurrent streams take turns, and the audio
a stream sends while its decoding step runs is decoded in one next step, so a busy server sends
fewer partials instead of falling behind real time. A streaming model
(:mod:`ctcasr.infer.stream`) decodes each chunk as it comes; any other model is re-decoded
greedily on the open segment's audio at most every ``partial_seconds`` of new audio, and once
more at its end as the model carries (the final); its endpoint is read from the word times of
the greedy re-decode (a pause of ``silence_s`` between words or after the last). Limits
(:class:`Limits`) answer with HTTP 413 / 415 / 503 or the close codes above; a client that
vanishes frees its stream and nothing else notices. Nothing a client sends is used as a path.
"""

from __future__ import annotations

import asyncio
import ctypes
import hmac
import io
import logging
import time
from dataclasses import dataclass
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
from ctcasr.serve.formats import FORMATS, render
from ctcasr.serve.session import ClientError, StreamSession, close_with

log = logging.getLogger("ctcasr.serve")
PAGE = Path(__file__).parent / "static" / "index.html"


@dataclass(frozen=True)
class Limits:
    max_upload_mb: float = 50.0  # POST /v1/transcribe body
    max_upload_seconds: float = 3600.0  # and the audio in it (a header may claim days)
    max_stream_seconds: float = 600.0  # audio per WebSocket stream
    max_message_kb: float = 1024.0  # one WebSocket message
    max_streams: int = 8  # WebSocket streams at once
    workers: int = 1  # decoding threads
    partial_seconds: float = 1.0  # full-context models: new audio between partial results
    header_seconds: float = 10.0  # an HTTP request's headers must arrive within this
    start_seconds: float = 10.0  # a stream's start message within this of its opening
    idle_seconds: float = 60.0  # and each later message within this of the one before
    send_seconds: float = 10.0  # a client that takes a message no faster is dropped
    shutdown_seconds: float = 10.0  # SIGTERM: open streams get this long to finish
    api_key: str | None = None  # every route but /healthz and the page asks for it
    allow_origins: tuple[str, ...] = ()  # other sites whose pages may call the API

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_streams < 1:
            raise CtcasrError("workers and max_streams must be at least 1")
        seconds = ("partial_seconds", "header_seconds", "start_seconds", "idle_seconds",
                   "send_seconds", "max_stream_seconds")
        for name in seconds:
            if not getattr(self, name) > 0:
                raise CtcasrError(f"{name} must be > 0 (seconds)")
        if self.api_key is not None and not self.api_key:
            raise CtcasrError("the API key is empty")


@dataclass
class Upload:
    data: np.ndarray  # [samples, channels]
    rate: int
    hotwords: list[str] | None  # this request's (None: the server's)
    fields: dict[str, str]  # a form's text fields


def create_app(asr: Transcriber, limits: Limits = Limits(), name: str = "model",
               endpoint: Endpoint | None = Endpoint()) -> Starlette:
    """``endpoint`` None: one segment per stream, ended by the stop message."""
    server = Server(asr, limits, name, endpoint)
    app = Starlette(routes=[Route("/", server.page), Route("/healthz", server.healthz),
                             Route("/v1/transcribe", server.transcribe, methods=["POST"]),
                             Route("/v1/audio/transcriptions", server.openai_transcriptions,
                                   methods=["POST"]),
                             WebSocketRoute("/v1/stream", server.stream)])
    app.state.server = server
    return app


class Server:
    """The routes' handlers around one model; ``streams`` counts the open WebSocket streams."""

    def __init__(self, asr: Transcriber, limits: Limits, name: str,
                 endpoint: Endpoint | None) -> None:
        self.asr, self.limits, self.name, self.endpoint = asr, limits, name, endpoint
        self.sr = asr.info.features.sample_rate
        self.streaming = asr.streams  # else its segments are re-decoded
        self.worker = anyio.CapacityLimiter(limits.workers)
        self.streams = 0
        self.trimmed = time.monotonic()  # the last trim()
        self.draining = asyncio.Event()  # set on SIGTERM / SIGINT (ctcasr.serve.run)

    def check_key(self, headers: Any, given: str | None = None) -> None:
        """Raise ClientError (WebSocket code 1008) unless the request carries the API key:
        ``Authorization: Bearer KEY`` or, for a stream, ``given`` (its start message's)."""
        key = self.limits.api_key
        if key is None:
            return
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else (given or "")
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise ClientError("this server asks for an API key: Authorization: Bearer KEY "
                              '(a stream may send it as "api_key" in its start message)', 1008)

    def origin_allowed(self, headers: Any) -> bool:
        """A browser page of another site may not open streams unless --allow-origin says so
        (a WebSocket is not held to the same-origin rule by the browser itself)."""
        origin = headers.get("origin")
        if origin is None or "*" in self.limits.allow_origins:
            return True
        same = origin.split("://", 1)[-1] == headers.get("host", "")
        return same or origin in self.limits.allow_origins

    async def run(self, fn, *args):
        """``fn(*args)`` in a decoding thread (``limits.workers`` at a time); then what it
        freed may go back to the system (:meth:`trim`)."""
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.worker)
        finally:
            await self.trim()

    async def page(self, request: Request) -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    async def healthz(self, request: Request) -> JSONResponse:
        """Open to all (no key): 200, or 503 while the server drains (a load balancer then
        sends new clients elsewhere). ``auth``: whether the other routes ask for a key."""
        draining = self.draining.is_set()
        return JSONResponse({"status": "draining" if draining else "ok", "model": self.name,
                             "sample_rate": self.sr, "streaming": self.streaming,
                             "streams": self.streams, "auth": self.limits.api_key is not None},
                            status_code=503 if draining else 200)

    async def transcribe(self, request: Request) -> Response:
        """The audio as the request body or a form's ``file`` field -> the transcript."""
        refused = self.refuse(request)
        if refused is not None:
            return refused
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
        refused = self.refuse(request)
        if refused is not None:
            return refused
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

    def refuse(self, request: Request) -> Response | None:
        """The answer to a request that may not be served (draining: 503; no key: 401)."""
        if self.draining.is_set():
            return error(503, "the server is shutting down")
        try:
            self.check_key(request.headers)
        except ClientError as e:
            return JSONResponse({"error": str(e)}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return None

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
        audio = self.read_audio(bytes(body))
        if isinstance(audio, Response):
            return audio
        return Upload(audio[0], audio[1], hotwords, fields)

    def read_audio(self, body: bytes) -> tuple[np.ndarray, int] | Response:
        """(samples [n, channels], rate) of an uploaded file, or the error response. What
        its header claims is checked before anything is allocated for it."""
        most = self.limits.max_upload_seconds
        try:
            with sf.SoundFile(io.BytesIO(body)) as f:
                if f.frames > most * f.samplerate:  # (libsndfile's "unknown": 2**63 - 1)
                    return error(413, f"the audio is over the limit of {most:g} s (its header "
                                 f"says {f.frames / f.samplerate:.0f} s)")
                data = f.read(dtype="float32", always_2d=True)
                rate = f.samplerate
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, MemoryError) as e:
            return error(415, f"not audio that soundfile reads ({_reason(e)})")
        if data.shape[0] == 0:
            return error(415, "the audio file holds no samples")
        return data, rate

    async def stream(self, ws: WebSocket) -> None:
        if not self.origin_allowed(ws.headers):
            await ws.close(1008)  # before accepting: the browser sees a failed handshake
            return
        await ws.accept()
        if self.draining.is_set():
            await close_with(ws, ClientError("the server is shutting down", 1001))
            return
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

    async def trim(self) -> None:
        """Give the memory freed since the last call back to the system (glibc's
        ``malloc_trim``, after decoding; at most every 10 s, off the event loop). Audio and
        activations of every size, allocated in several threads, otherwise leave glibc's
        arenas fragmented, and a long-running server's RSS grows though nothing is kept
        (measured by benchmarks/serve_soak.py)."""
        if _LIBC is None or time.monotonic() - self.trimmed < 10.0:
            return
        self.trimmed = time.monotonic()
        await anyio.to_thread.run_sync(_LIBC.malloc_trim, 0)


def _libc() -> Any:
    """glibc, when the process runs on it (None elsewhere: musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def _reason(e: Exception) -> str:
    """libsndfile's reason, without the Python object it names ("Error opening <...>: ")."""
    text = first_line(e)
    return text.rsplit(": ", 1)[-1].strip() if ": " in text else text


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


