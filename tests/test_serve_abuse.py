"""``ctcasr serve`` under abuse: an API key, clients that connect and say nothing (or a byte at a
time, or stop reading), a stop with streams open, and fuzzed inputs (hypothesis) on every door a
client or a corpus has: each case ends in a 4xx, a documented close code or a one-line error,
and the server goes on serving the next client right."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from test_serve import (
    LIMITS,
    SR,
    ConnectionClosed,
    Server,
    as_sent,
    connect,
    flac,
    httpx,
    recording,
    stream,
)
from test_transcribe import trained  # noqa: F401

import ctcasr

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

START = {"type": "start", "sample_rate": SR, "format": "s16le"}
CLOSE_CODES = {1000, 1003, 1008, 1009}  # docs/serving.md: normal, bad data, a limit, too big
FAST = dataclasses.replace(LIMITS, header_seconds=1.5, start_seconds=1.5, idle_seconds=1.5)
FUZZ = settings(max_examples=int(os.environ.get("CTCASR_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def asr(trained):  # noqa: F811
    return ctcasr.load(trained)


@pytest.fixture(scope="module")
def fast(asr):
    """A server with short deadlines (1.5 s) for slow clients."""
    s = Server(asr, limits=FAST)
    yield s
    s.stop()


def still_serves(server, asr, seed: int = 30) -> None:
    """The next client gets the right transcript, by stream and by upload."""
    wave = recording(seed, n=1)
    _, final = stream(server.ws, wave)
    assert final["text"] == asr.transcribe(as_sent(wave), SR).text
    r = httpx.post(f"{server.http}/v1/transcribe", content=flac(wave), timeout=60)
    assert r.status_code == 200 and r.json()["text"] == asr.transcribe(wave, SR).text


def wait_streams(server, n: int = 0, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while httpx.get(f"{server.http}/healthz").json()["streams"] != n:
        assert time.monotonic() < end, f"the server still counts streams, not {n}"
        time.sleep(0.1)


# ----------------------------------------------------------------------------- the API key
def test_api_key(asr):
    key = "k3y-" + "x" * 28
    server = Server(asr, limits=dataclasses.replace(LIMITS, api_key=key))
    try:
        h = httpx.get(f"{server.http}/healthz")
        assert h.status_code == 200 and h.json()["auth"] is True  # open to all
        assert httpx.get(server.http + "/").status_code == 200  # the page, which asks for it
        audio = flac(recording(2, n=1))
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
            for path in ("/v1/transcribe", "/v1/audio/transcriptions"):
                r = httpx.post(server.http + path, content=audio, headers=headers)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
                assert "asks for an API key" in r.json()["error"]
        r = httpx.post(f"{server.http}/v1/transcribe", content=audio,
                       headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["text"] == \
            asr.transcribe(sf.read(io.BytesIO(audio), dtype="float32")[0], SR).text
        # a stream: refused with the policy code, or let in by the header or the start message
        with connect(server.ws) as ws:
            ws.send(json.dumps(START))
            assert "asks for an API key" in json.loads(ws.recv(timeout=30))["error"]
            with pytest.raises(ConnectionClosed) as e:
                ws.recv(timeout=30)
        assert e.value.rcvd.code == 1008
        wave = recording(3, n=1)
        want = asr.transcribe(as_sent(wave), SR).text
        assert stream(server.ws, wave, start={**START, "api_key": key})[1]["text"] == want
        with connect(server.ws, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            ws.send(json.dumps(START))
            ws.send((as_sent(wave) * 32768).astype("<i2").tobytes())
            ws.send(json.dumps({"type": "stop"}))
            assert [json.loads(m) for m in ws][-1]["text"] == want
    finally:
        server.stop()


def test_other_sites_pages_may_not_open_streams(asr):
    server = Server(asr, limits=dataclasses.replace(LIMITS, allow_origins=("https://ok.example",)))
    try:
        with pytest.raises(Exception) as e:  # the handshake fails: no 101
            connect(server.ws, origin="https://evil.example")
        assert "403" in str(e.value) or "rejected" in str(e.value).lower()
        with connect(server.ws, origin="https://ok.example") as ws:
            ws.send(json.dumps(START))
        r = httpx.options(f"{server.http}/v1/transcribe", headers={
            "Origin": "https://ok.example", "Access-Control-Request-Method": "POST"})
        assert r.headers["access-control-allow-origin"] == "https://ok.example"
        r = httpx.options(f"{server.http}/v1/transcribe", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers
    finally:
        server.stop()


# ---------------------------------------------------------------------- slow and silent clients
def closed_by_server(sockets: list[socket.socket], timeout: float) -> int:
    """How many of ``sockets`` the server closes (EOF or reset) within ``timeout``."""
    sel = selectors.DefaultSelector()
    for s in sockets:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed, end = 0, time.monotonic() + timeout
    while closed < len(sockets) and time.monotonic() < end:
        for key, _ in sel.select(timeout=0.2):
            try:
                data = key.fileobj.recv(4096)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                closed += 1
    sel.close()
    return closed


def test_a_thousand_silent_connections(fast, asr):
    """1,000 TCP connections that never send a byte: a real client still streams and uploads
    right meanwhile, and the server closes every one of them after its header deadline."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * 1000 + 200  # both ends live in this process
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    n = min(1000, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200) // 2)
    assert n >= 400, "too few file descriptors for the test"
    silent = [socket.create_connection(("127.0.0.1", fast.port)) for _ in range(n)]
    try:
        still_serves(fast, asr)
        assert closed_by_server(silent, FAST.header_seconds + 15) == n
    finally:
        for s in silent:
            s.close()
    still_serves(fast, asr, seed=31)


def test_a_byte_at_a_time_is_closed(fast):
    """Headers trickled a byte every 0.3 s (slowloris) do not keep a connection open."""
    s = socket.create_connection(("127.0.0.1", fast.port))
    request, sent, t0 = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40, 0, 0.0
    t0 = time.monotonic()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for sent in range(len(request)):
            s.send(request[sent : sent + 1])
            time.sleep(0.3)
    s.close()
    assert sent < len(request) - 1  # cut off before it finished ...
    assert time.monotonic() - t0 < FAST.header_seconds + 3  # ... at the deadline


def test_streams_that_say_nothing_free_their_slots(fast, asr):
    """Streams that open and send no start message (or, started, nothing more) hold all 3
    slots for their deadline at most: then each is closed with code 1008 and the next
    client streams."""
    with contextlib.ExitStack() as stack:
        mute = [stack.enter_context(connect(fast.ws)) for _ in range(2)]
        started = stack.enter_context(connect(fast.ws))
        started.send(json.dumps(START))
        wait_streams(fast, 3)
        for ws, what in ((mute[0], "the start message"), (started, "audio or the stop")):
            msg = json.loads(ws.recv(timeout=30))
            assert msg["type"] == "error" and f"expected {what}" in msg["error"], msg
            with pytest.raises(ConnectionClosed) as e:
                ws.recv(timeout=30)
            assert e.value.rcvd.code == 1008
    wait_streams(fast, 0)
    still_serves(fast, asr)


def test_a_client_that_does_not_read_is_dropped():
    """A send the client does not take within ``send_seconds`` ends its stream (uvicorn holds
    a send back once 64 KiB wait in its buffer; then this deadline runs)."""
    import anyio
    from starlette.websockets import WebSocketDisconnect

    from ctcasr.serve.session import StreamSession

    class Stuck:
        async def send_json(self, message):
            await anyio.sleep(3600)

    class Srv:
        limits = dataclasses.replace(LIMITS, send_seconds=0.2)

    session = StreamSession(Srv(), Stuck())
    t0 = time.monotonic()
    with pytest.raises(WebSocketDisconnect):
        anyio.run(session.send, {"type": "partial", "text": "x"})
    assert time.monotonic() - t0 < 5


# ------------------------------------------------------------------------------ graceful stop
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_open_streams(trained, asr):  # noqa: F811
    """SIGTERM with 3 streams open: each gets the final of all the audio it sent and a normal
    close; meanwhile new clients are turned away (503, close 1001); the server exits 0."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ctcasr", "serve", str(trained), "--port",
                             str(port), "--threads", "1", "--endpoint-silence", "0",
                             "--shutdown-seconds", "60"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/stream"
    try:
        end = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < end, proc.stdout.read()
            time.sleep(0.2)
        waves = [recording(40 + k, n=2) for k in range(3)]
        with contextlib.ExitStack() as stack:
            socks = [stack.enter_context(connect(url)) for _ in waves]
            for ws, wave in zip(socks, waves, strict=True):
                ws.send(json.dumps(START))
                ws.send((as_sent(wave) * 32768).astype("<i2").tobytes())
            for ws in socks:  # a partial: the server has the audio
                assert json.loads(ws.recv(timeout=60))["type"] == "partial"
            proc.send_signal(signal.SIGTERM)
            finals = []
            for ws in socks:
                msgs = [json.loads(m) for m in ws]  # until the server closes
                assert ws.close_code == 1000, (ws.close_code, msgs)
                finals.append(msgs[-1])
            assert [f["last"] for f in finals] == [True] * 3
            assert [f["text"] for f in finals] == \
                [asr.transcribe(as_sent(w), SR).text for w in waves]
        assert proc.wait(60) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_draining_server_turns_new_clients_away(asr):
    server = Server(asr)
    try:
        # (no stream waits on the event, so setting it from this thread is safe)
        server.app.state.server.draining.set()
        h = httpx.get(f"{server.http}/healthz")
        assert h.status_code == 503 and h.json()["status"] == "draining"
        r = httpx.post(f"{server.http}/v1/transcribe", content=flac(recording(1, n=1)))
        assert r.status_code == 503 and "shutting down" in r.json()["error"]
        with connect(server.ws) as ws:
            assert "shutting down" in json.loads(ws.recv(timeout=30))["error"]
            with pytest.raises(ConnectionClosed) as e:
                ws.recv(timeout=30)
        assert e.value.rcvd.code == 1001
    finally:
        server.stop()


# ------------------------------------------------------------------------------- fuzzed inputs
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
START_FIELDS = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["start", "stop", "Start", ""]) | JSON,
    "sample_rate": st.sampled_from([SR, 16000, 0, -1, 2**63, 8000.0, True]) | JSON,
    "format": st.sampled_from(["s16le", "f32le", "mp3", ""]) | JSON,
    "hotwords": st.lists(st.text(max_size=12), max_size=5) | JSON,
    "api_key": JSON})
MESSAGE = (st.binary(max_size=3000) | st.builds(lambda n: b"\0" * n, st.integers(0, 70000))
           | st.builds(json.dumps, START_FIELDS | JSON) | st.text(max_size=40)
           | st.just(json.dumps({"type": "stop"})))


@pytest.fixture(scope="module")
def full_server(asr):
    s = Server(asr)
    yield s
    s.stop()


@FUZZ
@given(first=st.builds(json.dumps, START_FIELDS) | MESSAGE, then=st.lists(MESSAGE, max_size=6))
@example(first=json.dumps({"type": "start", "sample_rate": SR, "format": []}), then=[])
def test_fuzzed_streams(full_server, first, then):
    """Any messages in any order: each message back is a partial, a final or a one-line error,
    the close code is a documented one, and no traceback reaches the client."""
    got = []
    with connect(full_server.ws, max_size=None) as ws:
        with contextlib.suppress(ConnectionClosed):
            for m in [first, *then, json.dumps({"type": "stop"})]:
                ws.send(m)
        with contextlib.suppress(ConnectionClosed):
            while True:
                got.append(json.loads(ws.recv(timeout=60)))
        code = ws.close_code
    assert code in CLOSE_CODES, (code, got)
    for m in got:
        assert m["type"] in ("partial", "final", "error"), m
        if m["type"] == "error":
            assert "\n" not in m["error"] and "Traceback" not in m["error"], m


def audio_files() -> dict[str, bytes]:
    wave = recording(6, n=1)
    out = {}
    for fmt, sub in (("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", None)):
        buf = io.BytesIO()
        with contextlib.suppress(Exception):  # (a libsndfile without MP3)
            sf.write(buf, wave, SR, format=fmt, subtype=sub)
            out[fmt] = buf.getvalue()
    buf = io.BytesIO()
    sf.write(buf, wave[:1], SR, format="WAV")
    out["one sample"] = buf.getvalue()
    return out


FILES = audio_files()


def lying_flac() -> bytes:
    """A FLAC whose header claims 2**36 - 1 samples (99 days at 8 kHz) and holds 0.1 s. (A
    WAV's claim is cut to its file size by libsndfile; a FLAC's STREAMINFO is believed.)"""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(SR // 10, np.float32), SR, format="FLAC", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    v = int.from_bytes(data[18:26], "big") | ((1 << 36) - 1)  # STREAMINFO's total samples
    data[18:26] = v.to_bytes(8, "big")
    return bytes(data)


@st.composite
def mangled(draw) -> bytes:
    data = bytearray(FILES[draw(st.sampled_from(sorted(FILES)))])
    how = draw(st.sampled_from(["truncate", "flip", "splice", "as is"]))
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 20))):
            i = draw(st.integers(0, min(len(data) - 1, 200)))  # the header, mostly
            data[i] = draw(st.integers(0, 255))
    elif how == "splice":  # one format's header on another's body
        other = FILES[draw(st.sampled_from(sorted(FILES)))]
        data = data[:64] + other[64:]
    return bytes(data)


@FUZZ
@given(body=mangled() | st.binary(max_size=4000) | st.sampled_from([lying_flac()]),
       name=st.sampled_from(["a.wav", "a.flac", "a.mp3", "a.ogg", "a", "../../etc/passwd"]),
       form=st.booleans())
def test_fuzzed_uploads(full_server, body, name, form):
    """Truncated, corrupted, spliced and mislabelled files, random bytes and a header that
    claims months of audio: a 200 or a 4xx with a one-line error, never a 5xx."""
    url = f"{full_server.http}/v1/transcribe"
    r = httpx.post(url, files={"file": (name, body, "audio/mpeg")}, timeout=120) if form \
        else httpx.post(url, content=body, headers={"content-type": "audio/mpeg"}, timeout=120)
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text)
    if r.status_code != 200:
        err = r.json()["error"]
        assert "\n" not in err and "Traceback" not in err and " at 0x" not in err, err


def test_a_header_that_claims_months_is_refused_before_reading(full_server, asr):
    r = httpx.post(f"{full_server.http}/v1/transcribe", content=lying_flac())
    assert r.status_code == 413 and "over the limit of 3600 s" in r.json()["error"], r.text
    still_serves(full_server, asr)


LINE = st.text(max_size=60) | st.builds(json.dumps, st.dictionaries(
    st.sampled_from(["id", "audio", "duration", "text", "offset", "speaker"]), JSON, max_size=6))


@FUZZ
@given(lines=st.lists(LINE | st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
                      max_size=6))
def test_fuzzed_manifest_rows(tmp_path_factory, lines):
    """A manifest of any lines: read, or a CtcasrError naming the file and line (never another
    exception); with --skip-bad every bad line is listed, the good ones kept."""
    from ctcasr.data.badinputs import BadInputs
    from ctcasr.data.manifest import read_manifest
    from ctcasr.errors import CtcasrError

    path = tmp_path_factory.mktemp("m") / "m.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    try:
        read_manifest(path)
    except CtcasrError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e), e
    bad = BadInputs(skip=True)
    try:
        kept = read_manifest(path, bad=bad)
    except CtcasrError as e:
        assert "manifest is empty" in str(e)
        kept = []
    assert all(m.startswith(f"{path}:") for m in bad.messages)
    assert len(kept) + bad.count <= len([ln for ln in path.read_bytes().split(b"\n")
                                         if ln.strip()])


FIELD = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
                max_size=20)


@FUZZ
@given(text=st.lists(st.lists(FIELD, max_size=4).map(" ".join), max_size=5),
       scp=st.lists(st.lists(FIELD, max_size=4).map(" ".join), max_size=5),
       spk=st.lists(st.lists(FIELD, max_size=3).map(" ".join), max_size=5),
       tsv=st.lists(st.lists(FIELD, max_size=5).map("\t".join), max_size=5))
def test_fuzzed_kaldi_and_common_voice_rows(tmp_path_factory, text, scp, spk, tsv):
    """Kaldi ``text`` / ``wav.scp`` / ``utt2spk`` and a Common Voice table of any rows: lines,
    or a CtcasrError naming the file (never another exception)."""
    from ctcasr.data.corpora import import_corpus
    from ctcasr.errors import CtcasrError

    root = tmp_path_factory.mktemp("corpus")
    kaldi, cv = root / "kaldi", root / "cv"
    kaldi.mkdir()
    (cv / "clips").mkdir(parents=True)
    for name, rows in (("text", text), ("wav.scp", scp), ("utt2spk", spk)):
        (kaldi / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    (cv / "train.tsv").write_text("\n".join(["client_id\tpath\tsentence", *tsv]) + "\n",
                                  encoding="utf-8")
    for fmt, src in (("kaldi", kaldi), ("commonvoice", cv)):
        try:
            list(import_corpus(fmt, src))
        except CtcasrError as e:
            assert str(e).startswith(str(src)) and "\n" not in str(e), e
