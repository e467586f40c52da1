"""Soak ``ctcasr serve``: hours of real-time streams, connection churn and uploads, with the
server's memory, file descriptors and threads sampled as it goes.

    .venv/bin/python benchmarks/serve_soak.py [--checkpoint CKPT | --random lstm-uni]
        [--manifest TEST.jsonl] [--streams 8] [--minutes 30] [--stream-seconds 20]
        [--window-minutes 5] [--sample-seconds 10] [--json FILE]

The server runs as its own process (``ctcasr serve`` on a loopback port, as serve_load.py
starts it, with two stream slots more than ``--streams`` for the churn). For ``--minutes``:

- ``--streams`` clients stream ``--stream-seconds`` of audio each in real time (100 ms
  messages), one stream after another, started ``stream-seconds / streams`` apart, and check
  each stream's text (its segments' finals) against the first one's (the same audio gives
  the same text);
- a churn client opens connections and drops them every 0.5 s, in turn: a TCP connection that
  closes without a byte, a stream that starts, sends 0.1 s of audio and closes, and one that
  vanishes (its socket shut with no close frame);
- an upload client posts a 3 s file every 2 s and checks its text against the first answer;
- every ``--sample-seconds`` the server's RSS, open file descriptors and threads are read
  from /proc.

It prints one table: RSS growth per hour after the first ``--window-minutes``, file
descriptors and threads at the end of that window and at the end (after the clients stop),
partial latency p50 / p95 and final p95 in the first and the last window, and errors by kind
(none expected). Linux only (/proc). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from serve_load import audio, client, model_and_audio, pct, start_server

from ctcasr.environment import cpu_model


class Soak:
    """The clients and the sampler, run until ``end`` (wall clock)."""

    def __init__(self, base: str, pid: int, sr: int, wave: np.ndarray, end: float) -> None:
        self.base, self.ws = base, base.replace("http", "ws") + "/v1/stream"
        self.pid, self.sr, self.wave, self.end = pid, sr, wave, end
        self.lock = threading.Lock()
        self.errors: collections.Counter[str] = collections.Counter()
        self.streams: list[dict] = []  # each finished stream's client output, with "t"
        self.samples: list[dict] = []  # {"t", "rss_mb", "fds", "threads"}
        self.counts: collections.Counter[str] = collections.Counter()
        self.want_final: str | None = None
        self.first_error: dict[str, float] = {}  # kind -> when it first happened

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1
            self.first_error.setdefault(kind, time.time())

    def streamer(self, delay: float) -> None:
        time.sleep(delay)  # streams out of step, as people's are
        while time.time() < self.end:
            out: dict = {}
            client(self.ws, self.wave, self.sr, self.sr // 10, out)
            out["t"] = time.time()
            if "error" in out:
                self.error(f"stream: {out['error'][:60]}")
            with self.lock:
                self.counts["streams"] += 1
                if "error" in out:
                    continue
                self.want_final = self.want_final if self.want_final is not None \
                    else out["text"]
                if out["text"] != self.want_final:
                    self.errors["stream: a different final text"] += 1
                self.streams.append(out)

    def churn(self) -> None:
        from websockets.sync.client import connect

        start = json.dumps({"type": "start", "sample_rate": self.sr, "format": "s16le"})
        tenth = np.zeros(self.sr // 10, np.int16).tobytes()
        k = 0
        while time.time() < self.end:
            try:
                if k % 3 == 0:
                    socket.create_connection(_addr(self.base), timeout=10).close()
                else:
                    with connect(self.ws, open_timeout=10, close_timeout=1) as ws:
                        ws.send(start)
                        ws.send(tenth)
                        if k % 3 == 2:  # vanish: the socket shut, no close frame
                            ws.socket.shutdown(socket.SHUT_RDWR)
                self.counts["churn"] += 1
            except Exception as e:  # noqa: BLE001 (counted)
                rcvd = getattr(e, "rcvd", None)  # a close frame from the server: its code
                self.error(f"churn: {type(e).__name__}"
                           + (f" {rcvd.code} {rcvd.reason[:40]}" if rcvd else ""))
            k += 1
            time.sleep(0.5)

    def uploads(self) -> None:
        import httpx

        buf = io.BytesIO()
        sf.write(buf, self.wave[: 3 * self.sr], self.sr, format="FLAC")
        body, want = buf.getvalue(), None
        while time.time() < self.end:
            try:
                r = httpx.post(f"{self.base}/v1/transcribe", content=body, timeout=120)
                if r.status_code != 200:
                    self.error(f"upload: HTTP {r.status_code}")
                else:
                    want = want if want is not None else r.json()["text"]
                    if r.json()["text"] != want:
                        self.error("upload: a different text")
                self.counts["uploads"] += 1
            except Exception as e:  # noqa: BLE001 (counted)
                self.error(f"upload: {type(e).__name__}")
            time.sleep(2.0)

    def sample(self) -> dict:
        status = Path(f"/proc/{self.pid}/status").read_text()
        field = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        s = {"t": time.time(), "rss_mb": int(field["VmRSS"].split()[0]) / 1024,
             "threads": int(field["Threads"]), "fds": len(os.listdir(f"/proc/{self.pid}/fd"))}
        with self.lock:
            self.samples.append(s)
        return s

    def sampler(self, every: float) -> None:
        while time.time() < self.end:
            self.sample()
            time.sleep(min(every, max(0.0, self.end - time.time())))


def _addr(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def summary(soak: Soak, t0: float, warm: float, window: float, last: dict) -> dict:
    """The table's numbers (module doc); ``last``: the sample after the clients stopped."""
    after = [s for s in soak.samples if s["t"] >= t0 + warm]
    at_warm = after[0] if after else soak.samples[-1]
    hours = max((last["t"] - at_warm["t"]) / 3600, 1e-9)

    def latencies(lo: float, hi: float) -> tuple[list[float], list[float]]:
        partial = [ms for o in soak.streams for ms, at in zip(o["partial_ms"], o["partials_at"],
                                                              strict=True) if lo <= at < hi]
        final = [o["final_ms"] for o in soak.streams if lo <= o["t"] < hi]
        return partial, final

    end = max(o["t"] for o in soak.streams) if soak.streams else last["t"]
    first_p, first_f = latencies(t0, t0 + window)
    last_p, last_f = latencies(end - window, end + 1)
    return {
        "minutes": round((last["t"] - t0) / 60, 1), "streams": soak.counts["streams"],
        "churned": soak.counts["churn"], "uploads": soak.counts["uploads"],
        "rss_mb_warm": round(at_warm["rss_mb"], 1), "rss_mb_end": round(last["rss_mb"], 1),
        "rss_growth_pct_per_h": round(100 * (last["rss_mb"] / at_warm["rss_mb"] - 1) / hours, 2),
        "fds_warm": at_warm["fds"], "fds_end": last["fds"],
        "fds_max": max(s["fds"] for s in soak.samples),
        "threads_warm": at_warm["threads"], "threads_end": last["threads"],
        "threads_max": max(s["threads"] for s in soak.samples),
        "p50_partial_ms_first": round(pct(first_p, 50), 1),
        "p95_partial_ms_first": round(pct(first_p, 95), 1),
        "p50_partial_ms_last": round(pct(last_p, 50), 1),
        "p95_partial_ms_last": round(pct(last_p, 95), 1),
        "p95_final_ms_first": round(pct(first_f, 95), 1),
        "p95_final_ms_last": round(pct(last_f, 95), 1),
        "errors": dict(soak.errors), "error_count": sum(soak.errors.values()),
        "first_error_minute": {k: round((t - t0) / 60, 1) for k, t in soak.first_error.items()}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--random", choices=["lstm", "lstm-uni"])
    ap.add_argument("--manifest", type=Path)
    ap.add_argument("--streams", type=int, default=8, help="the server's default --max-streams")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--stream-seconds", type=float, default=20.0)
    ap.add_argument("--window-minutes", type=float, default=5.0)
    ap.add_argument("--sample-seconds", type=float, default=10.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    ckpt, manifest = model_and_audio(args, "ctcasr-serve-soak-")
    server, base, info = start_server(ckpt, "--max-streams", str(args.streams + 2))
    try:
        sr = info["sample_rate"]
        wave = audio(manifest, sr, args.stream_seconds)
        t0 = time.time()
        soak = Soak(base, server.pid, sr, wave, t0 + 60 * args.minutes)
        workers = [threading.Thread(target=soak.streamer,
                                    args=(k * args.stream_seconds / args.streams,))
                   for k in range(args.streams)]
        workers += [threading.Thread(target=soak.churn), threading.Thread(target=soak.uploads),
                    threading.Thread(target=soak.sampler, args=(args.sample_seconds,))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        time.sleep(3.0)  # the server lets go of what the last clients held
        last = soak.sample()
        if server.poll() is not None:
            soak.error(f"the server exited with status {server.returncode}")
        row = summary(soak, t0, 60 * args.window_minutes, 60 * args.window_minutes, last)
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            soak.error("the server took over 60 s to stop after SIGTERM")
            row["errors"], row["error_count"] = dict(soak.errors), sum(soak.errors.values())
    print(f"model {ckpt.name}{' (random ' + args.random + ')' if args.random else ''}, "
          f"{args.streams} real-time streams of {args.stream_seconds:g} s, churn every 0.5 s, "
          f"an upload every 2 s, CPU {cpu_model()}")
    print("| measure | value |\n| --- | --- |")
    for k, v in row.items():
        print(f"| {k} | {v} |")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1) + "\n")
    return row


if __name__ == "__main__":
    main()
