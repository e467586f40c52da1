"""Fabricated upstream corpus archives in their real layouts, served over loopback.

``serve(files)`` starts an HTTP server on 127.0.0.1 that answers GET for the given paths (with
range requests, as the real hosts do) and records what it was asked; the recipes reach it through
``CTCASR_MIRROR``. The archives hold tiny audio (tones) in each corpus's layout as published:
FSDD's GitHub tarball, OpenSLR 101's speechocean762.tar.gz and rhasspy's dataset-voice-cathy.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import soundfile as sf
from conftest import tone

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FSDD_PATH = "/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
SPEECHOCEAN_PATH = "/resources/101/speechocean762.tar.gz"
CATHY_PATH = "/rhasspy/dataset-voice-cathy/archive/refs/heads/master.tar.gz"


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    log: list[tuple[str, str]] = []
    cut: dict[str, int] = {}  # path -> bytes sent before the connection drops (once)

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        body = self.files.get(self.path)
        rng = self.headers.get("Range", "")
        self.log.append((self.path, rng))
        if body is None:
            self.send_error(404)
            return
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        stop = self.cut.pop(self.path, len(body))
        self.wfile.write(body[start:stop])

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(files: dict[str, bytes], cut: dict[str, int] | None = None
          ) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A loopback server of ``files`` (path -> bytes): yields (its base URL, the request log)."""
    handler = type("Handler", (_Handler,), {"files": files, "log": [], "cut": dict(cut or {})})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.log
    finally:
        server.shutdown()
        server.server_close()


def _wav(seconds: float, sr: int, freq: float, seed: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(freq, seconds, sr, seed), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fsdd_archive(speakers=("george", "jackson", "lucas"), takes: int = 12) -> bytes:
    top = "free-spoken-digit-dataset-1.0.10"
    members = {f"{top}/README.md": b"FSDD\n"}
    for s, spk in enumerate(speakers):
        for d in range(10):
            for i in range(takes):
                members[f"{top}/recordings/{d}_{spk}_{i}.wav"] = \
                    _wav(0.25, 8000, 200 + 60 * d + 7 * s, seed=s * 1000 + d * 50 + i)
    return _tar(members)


def speechocean_archive() -> bytes:
    """train/: 10 speakers (5 aged 10, 5 aged 30), test/: 2 others; each says one sentence and
    one digit string, 16 kHz WAV under WAVE/ as released."""
    top, members = "speechocean762", {}
    sentences = ["WE CALL IT BEAR", "I LIKE TO READ", "ONE TWO", "SEVEN FIVE NINE"]
    for split, first, n in (("train", 1, 10), ("test", 50, 2)):
        rows: dict[str, list[str]] = {k: [] for k in ("text", "wav.scp", "utt2spk", "spk2age",
                                                        "spk2gender")}
        for k in range(n):
            spk = f"{first + k:04d}"
            rows["spk2age"].append(f"{spk} {10 if k % 2 else 30}")
            rows["spk2gender"].append(f"{spk} {'m' if k % 3 else 'f'}")
            for j, text in enumerate((sentences[k % 2], sentences[2 + k % 2])):
                utt = f"{spk}{j:05d}"
                members[f"{top}/WAVE/SPEAKER{spk}/{utt}.WAV"] = \
                    _wav(0.4 + 0.2 * len(text.split()), 16000, 300 + 40 * k + 90 * j, seed=k)
                rows["text"].append(f"{utt}\t{text}")
                rows["wav.scp"].append(f"{utt}\tWAVE/SPEAKER{spk}/{utt}.WAV")
                rows["utt2spk"].append(f"{utt}\t{spk}")
        for name, lines in rows.items():
            members[f"{top}/{split}/{name}"] = ("\n".join(lines) + "\n").encode()
    return _tar(members)


def cathy_archive(phrases: int = 12) -> bytes:
    """ARCTIC as rhasspy's dataset-voice-cathy repository holds it: {utt}.wav beside {utt}.txt
    (48 kHz stereo there; mono here)."""
    top, members = "dataset-voice-cathy-master", {}
    for p in range(1, phrases + 1):
        utt = f"arctic_a{p:04d}_1"
        members[f"{top}/{utt}.wav"] = _wav(1.5, 16000, 250 + 30 * p, seed=p)
        members[f"{top}/{utt}.txt"] = f"The danger trail, {WORDS[p % 10]}.\n".encode()
    return _tar(members)


def main_job_archives() -> dict[str, bytes]:
    return {FSDD_PATH: fsdd_archive(), SPEECHOCEAN_PATH: speechocean_archive(),
            CATHY_PATH: cathy_archive()}
