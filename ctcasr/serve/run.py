"""Running the app: uvicorn with the server's own limits on slow clients and a graceful stop.

- **Slow and silent clients**: an HTTP connection must send a request's headers within
  ``limits.header_seconds`` of opening (and of its previous response, kept alive): one that
  connects and says nothing, or sends a byte every few seconds, is closed (:class:`H11`); an
  idle keep-alive connection closes after uvicorn's ``timeout_keep_alive``. A stream's own
  deadlines are :class:`ctcasr.serve.session.StreamSession`'s; WebSocket pings (every 20 s,
  20 s to answer) drop a peer that vanished without closing.
- **Graceful stop** (:class:`GracefulServer`): SIGTERM or SIGINT stops new requests and streams
  (503 / close 1001), lets each open stream finish: its audio so far is decoded, its final
  result sent and the socket closed normally, for up to ``limits.shutdown_seconds``; then the
  server exits with status 0. A second SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from types import FrameType

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol

from ctcasr.errors import CtcasrError


class H11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for a request's headers."""

    header_seconds = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.header_seconds, self._too_slow)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the headers are in (or it upgraded)
            self._deadline.cancel()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._deadline.cancel()
            self._arm()  # the next request on this connection has the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class GracefulServer(uvicorn.Server):
    """uvicorn's server, stopping as the module doc says (``draining``: the app's event)."""

    def __init__(self, config: uvicorn.Config, draining: asyncio.Event, streams,
                 shutdown_seconds: float) -> None:
        super().__init__(config)
        self.draining, self.streams, self.shutdown_seconds = draining, streams, shutdown_seconds
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.draining.is_set() or self.loop is None:
            if sig == signal.SIGINT or self.loop is None:
                super().handle_exit(sig, frame)  # a second Ctrl-C: now
                self._captured_signals.clear()
            return
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._drain()))

    async def _drain(self) -> None:
        self.draining.set()
        end = asyncio.get_running_loop().time() + self.shutdown_seconds
        while self.streams() and asyncio.get_running_loop().time() < end:
            await asyncio.sleep(0.05)
        self.should_exit = True


def run_server(app: Starlette, host: str, port: int, limits, certfile: Path | None = None,
               keyfile: Path | None = None, banner: str = "serving") -> None:
    """Run the app of :func:`ctcasr.serve.app.create_app` until SIGTERM / Ctrl-C (HTTPS with
    ``certfile`` and ``keyfile``)."""
    if (certfile is None) != (keyfile is None):
        raise CtcasrError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
    for f in (certfile, keyfile):
        if f is not None and not f.is_file():
            raise CtcasrError(f"{f}: no such file")
    scheme = "https" if certfile else "http"
    print(f"{banner} at {scheme}://{host}:{port}/ (Ctrl-C stops)", flush=True)
    server = GracefulServer(config(app, limits, host, port, certfile, keyfile),
                            app.state.server.draining, lambda: app.state.server.streams,
                            limits.shutdown_seconds)
    server.run()


def config(app: Starlette, limits, host: str = "127.0.0.1", port: int = 8000,
           certfile: Path | None = None, keyfile: Path | None = None,
           **more) -> uvicorn.Config:
    """uvicorn's config for ``app`` with the server's limits (tests run the same)."""
    protocol = type("H11", (H11,), {"header_seconds": limits.header_seconds})
    served = app
    if limits.allow_origins:
        served = CORSMiddleware(app, allow_origins=list(limits.allow_origins),
                                allow_methods=["GET", "POST"],
                                allow_headers=["Authorization", "Content-Type"])
    return uvicorn.Config(served, host=host, port=port, log_level="warning", http=protocol,
                          ws="websockets-sansio",
                          ws_max_size=int(4 * limits.max_message_kb * 1024),
                          ws_ping_interval=20.0, ws_ping_timeout=20.0, timeout_keep_alive=5,
                          # after the drain, what still waits for the decoder is cancelled
                          timeout_graceful_shutdown=limits.shutdown_seconds,
                          ssl_certfile=str(certfile) if certfile else None,
                          ssl_keyfile=str(keyfile) if keyfile else None, **more)
