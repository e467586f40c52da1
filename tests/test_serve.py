"""``ctcasr serve``: a real uvicorn server on a loopback port, real clients (httpx, websockets).

A recording sent over the socket gives the final text ``transcribe`` gives for the same samples
(a full-context Conformer, re-decoded; a streaming LSTM, chunk by chunk); every bad input gets
its error and the other streams go on; a few concurrent streams all finish right."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf
from test_transcribe import SR, make_checkpoint, trained, trained_uni, utterance  # noqa: F401

import ctcasr

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from ctcasr.decode.settings import hotword_list  # noqa: E402
from ctcasr.serve.app import Endpoint, Limits, create_app  # noqa: E402
from ctcasr.serve.run import config  # noqa: E402

LIMITS = Limits(max_upload_mb=0.25, max_stream_seconds=20, max_message_kb=64, max_streams=3,
                partial_seconds=0.5)


class Server:
    """uvicorn in a thread on a free loopback port, configured as ``ctcasr serve`` runs it."""

    def __init__(self, asr, endpoint: Endpoint | None = None, ssl: tuple | None = None,
                 limits: Limits = LIMITS) -> None:
        """``ssl``: (certificate, key) PEM files: HTTPS and WSS."""
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.app = create_app(asr, limits, "test", endpoint)
        self.server = uvicorn.Server(config(self.app, limits, "127.0.0.1", self.port,
                                            *(ssl or (None, None))))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.05)
        self.http = f"{'https' if ssl else 'http'}://127.0.0.1:{self.port}"
        self.ws = f"{'wss' if ssl else 'ws'}://127.0.0.1:{self.port}/v1/stream"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def full(trained):  # noqa: F811
    asr = ctcasr.load(trained)
    s = Server(asr)
    yield s, asr
    s.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    asr = ctcasr.load(make_checkpoint(tmp_path_factory.mktemp("live") / "uni.pt", "lstm",
                                      bidirectional=False))
    s = Server(asr)
    yield s, asr
    s.stop()


def recording(seed: int = 0, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([utterance(rng, seed=seed * 10 + k)[0] for k in range(n)])


def stream(url: str, wave: np.ndarray, fmt: str = "s16le", chunk: int = 1600,
           start: dict | None = None) -> tuple[list[dict], dict]:
    """Send ``wave`` over the socket; returns (partial messages, the last message)."""
    data = (np.clip(wave, -1, 1) * 32767).astype("<i2") if fmt == "s16le" \
        else wave.astype("<f4")
    with connect(url) as ws:
        ws.send(json.dumps(start or {"type": "start", "sample_rate": SR, "format": fmt}))
        for i in range(0, len(data), chunk):
            ws.send(data[i : i + chunk].tobytes())
        ws.send(json.dumps({"type": "stop"}))
        msgs = [json.loads(m) for m in ws]
    return [m for m in msgs if m["type"] == "partial"], msgs[-1]


def messages(url: str, wave: np.ndarray, chunk: int = 800) -> list[dict]:
    """Every message the server sends for ``wave`` (s16le)."""
    data = (np.clip(wave, -1, 1) * 32767).astype("<i2")
    with connect(url) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": SR, "format": "s16le"}))
        for i in range(0, len(data), chunk):
            ws.send(data[i : i + chunk].tobytes())
        ws.send(json.dumps({"type": "stop"}))
        return [json.loads(m) for m in ws]


def as_sent(wave: np.ndarray) -> np.ndarray:
    return (np.clip(wave, -1, 1) * 32767).astype(np.int16).astype(np.float32) / 32768


@pytest.mark.parametrize("which", ["full", "live"])
def test_stream_final_is_transcribe(which, request):
    server, asr = request.getfixturevalue(which)
    wave = recording(1)
    partials, final = stream(server.ws, wave)
    want = asr.transcribe(as_sent(wave), SR)
    assert final["type"] == "final" and final["text"] == want.text
    assert final["duration"] == pytest.approx(len(wave) / SR, abs=1e-3)
    assert [w["word"] for w in final["words"]] == want.text.split()
    # partials as the text changes, never repeated, over more and more audio (sent faster
    # than real time, how many depends on how steps fold the audio; the live model is
    # untrained: its text is whatever it is)
    assert len(partials) >= 1
    assert all(a["audio_s"] < b["audio_s"] for a, b in zip(partials, partials[1:], strict=False))
    assert all(a["text"] != b["text"] for a, b in zip(partials, partials[1:], strict=False))
    _, f32 = stream(server.ws, wave, fmt="f32le", chunk=777)
    assert f32["text"] == asr.transcribe(wave.astype(np.float32), SR).text


def test_healthz_page_and_upload(full):
    server, asr = full
    h = httpx.get(f"{server.http}/healthz").json()
    assert h == {"status": "ok", "model": "test", "sample_rate": SR, "streaming": False,
                 "streams": 0, "auth": False}
    page = httpx.get(server.http + "/")
    assert page.status_code == 200 and "<title>ctcasr</title>" in page.text
    buf = io.BytesIO()
    wave = recording(2)
    sf.write(buf, wave, SR, format="FLAC")
    r = httpx.post(f"{server.http}/v1/transcribe", content=buf.getvalue())
    assert r.status_code == 200, r.text
    assert r.json()["text"] == asr.transcribe(sf.read(io.BytesIO(buf.getvalue()),
                                                       dtype="float32")[0], SR).text


def test_upload_errors(full):
    server, _ = full
    url = f"{server.http}/v1/transcribe"
    r = httpx.post(url, content=b"<html>not audio</html>")
    assert r.status_code == 415 and r.json()["error"].startswith("not audio that soundfile")
    big = b"\0" * (int(LIMITS.max_upload_mb * 2**20) + 1)
    r = httpx.post(url, content=big)  # Content-Length says so: refused before reading
    assert r.status_code == 413 and "over the limit of 0.25 MB" in r.json()["error"]
    r = httpx.post(url, content=(big[i : i + 65536] for i in range(0, len(big), 65536)))
    assert r.status_code == 413  # chunked, no length: counted while reading
    assert httpx.post(url, content=b"").status_code == 400
    assert httpx.get(url).status_code == 405


def flac(wave: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, SR, format="FLAC")
    return buf.getvalue()


def test_form_uploads_as_curl_and_openai_clients_send_them(full):
    """``curl -F file=@a.flac`` and the multipart body an OpenAI-style client sends (file,
    model, response_format, ...): the same text as ``transcribe``, in each response format."""
    server, asr = full
    wave = recording(4)
    audio = flac(wave)
    want = asr.transcribe(sf.read(io.BytesIO(audio), dtype="float32")[0], SR)
    r = httpx.post(f"{server.http}/v1/transcribe", files={"file": ("a.flac", audio)})
    assert r.status_code == 200 and r.json()["text"] == want.text, r.text
    url = f"{server.http}/v1/audio/transcriptions"
    fields = {"model": "whisper-1", "language": "en", "temperature": "0"}  # accepted, ignored
    got = {}
    for fmt in ("json", "text", "srt", "vtt", "verbose_json"):
        r = httpx.post(url, files={"file": ("a.flac", audio, "audio/flac")},
                       data={**fields, "response_format": fmt})
        assert r.status_code == 200, r.text
        got[fmt] = r.json() if fmt.endswith("json") else r.text
    assert got["json"] == {"text": want.text} and got["text"] == want.text + "\n"
    v = got["verbose_json"]
    assert v["text"] == want.text and [w["word"] for w in v["words"]] == want.text.split()
    assert " ".join(seg["text"] for seg in v["segments"]) == want.text
    assert got["srt"].startswith("1\n00:00:0") and " --> " in got["srt"]
    assert got["vtt"].startswith("WEBVTT\n\n00:00:0")
    cues = [line for line in got["srt"].splitlines() if line and " --> " not in line
            and not line.isdigit()]
    assert " ".join(cues) == want.text
    r = httpx.post(url, files={"file": ("a.flac", audio)}, data={"response_format": "xml"})
    assert r.status_code == 400 and "response_format 'xml'" in r.json()["error"]
    assert httpx.post(url, content=audio).status_code == 400  # not a form
    r = httpx.post(url, data={"model": "x"}, files={"other": ("a", b"1")})
    assert r.status_code == 400 and "no 'file' field" in r.json()["error"]
    r = httpx.post(url, content=b"--x\r\nbroken", headers={
        "content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400, r.text
    r = httpx.post(f"{server.http}/v1/transcribe", files={"file": ("a.wav", b"RIFF....junk")})
    assert r.status_code == 415 and "object at 0x" not in r.json()["error"], r.json()
    assert httpx.get(f"{server.http}/healthz").status_code == 200  # still serving


def test_hotwords_per_request(full):
    server, asr = full
    wave = recording(5)
    audio = flac(wave)
    samples = sf.read(io.BytesIO(audio), dtype="float32")[0]
    hot = asr.transcribe(samples, SR, hotwords=["ab ba"])
    r = httpx.post(f"{server.http}/v1/transcribe?hotwords=ab%20ba", content=audio)
    assert r.status_code == 200 and r.json()["text"] == hot.text
    r = httpx.post(f"{server.http}/v1/transcribe", files={"file": ("a.flac", audio)},
                   data={"hotwords": "ab ba\n"})
    assert r.status_code == 200 and r.json()["text"] == hot.text
    _, final = stream(server.ws, wave, start={"type": "start", "sample_rate": SR,
                                              "hotwords": ["ab ba"]})
    assert final["text"] == asr.with_hotwords(["ab ba"]).transcribe(as_sent(wave), SR).text
    err = expect_error(server.ws, json.dumps({"type": "start", "sample_rate": SR,
                                              "hotwords": "ab"}))
    assert "hotwords must be a list" in err


def expect_error(url: str, first, then=(), code: int = 1003) -> str:
    """Send ``first`` (a start message) and ``then``; returns the error text, checks the code."""
    with connect(url) as ws:
        ws.send(first)
        for m in then:
            ws.send(m)
        msg = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=30)
    assert msg["type"] == "error" and e.value.rcvd.code == code, (msg, e.value.rcvd)
    return msg["error"]


def test_stream_errors_leave_other_streams_alone(full):
    server, asr = full
    wave = recording(3)
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(stream, server.ws, wave, "s16le", 400)  # goes on meanwhile
        url, start = server.ws, {"type": "start", "sample_rate": SR, "format": "s16le"}
        assert "must be JSON" in expect_error(url, "hello")
        assert "first message must be the JSON start" in expect_error(url, b"\0\0")
        assert "sample_rate must be an integer (this model's is 8000), got None" in \
            expect_error(url, json.dumps({"type": "start"}))
        assert "sample_rate 16000: this model takes 8000 Hz" in \
            expect_error(url, json.dumps({**start, "sample_rate": 16000}))
        assert "format 'mp3'" in expect_error(url, json.dumps({**start, "format": "mp3"}))
        assert "3 bytes is not a whole number of 2-byte samples" in \
            expect_error(url, json.dumps(start), [b"\0\0\0"])
        assert "over the limit of 64 KB" in \
            expect_error(url, json.dumps(start), [b"\0" * 70000], code=1009)
        assert 'expected binary audio or {"type": "stop"}' in \
            expect_error(url, json.dumps(start), [json.dumps({"type": "pause"})])
        too_long = np.zeros(int(LIMITS.max_stream_seconds * SR) + 2, np.int16).tobytes()
        assert "over the limit of 20 s of audio" in expect_error(
            url, json.dumps(start), [too_long[i : i + 60000] for i in range(0, len(too_long),
                                                                             60000)], 1008)
        # a client that vanishes mid-stream: nothing else notices
        with connect(url) as ws:
            ws.send(json.dumps(start))
            ws.send(np.zeros(800, np.int16).tobytes())
        _, final = other.result(timeout=120)
    assert final["text"] == asr.transcribe(as_sent(wave), SR).text
    for _ in range(50):
        if httpx.get(f"{server.http}/healthz").json()["streams"] == 0:
            break
        time.sleep(0.1)
    assert httpx.get(f"{server.http}/healthz").json()["streams"] == 0


def test_concurrent_streams_and_the_limit(live):
    server, asr = live
    waves = [recording(10 + k, n=2) for k in range(3)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda w: stream(server.ws, w, chunk=800)[1], waves))
    assert [r["text"] for r in results] == [asr.transcribe(as_sent(w), SR).text for w in waves]
    # over max_streams (3): the fourth is told to come back later
    start = json.dumps({"type": "start", "sample_rate": SR, "format": "s16le"})
    with contextlib.ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(connect(server.ws)).send(start)
        time.sleep(0.5)
        with connect(server.ws) as ws:
            msg = json.loads(ws.recv(timeout=30))
            with pytest.raises(ConnectionClosed) as e:
                ws.recv(timeout=30)
        assert msg["type"] == "error" and msg["error"].startswith("busy: 3 streams")
        assert e.value.rcvd.code == 1013


@pytest.mark.parametrize("model", ["trained", "trained_uni"])
def test_segments_end_at_pauses(model, request):
    """Two phrases 1.5 s apart, then 1.5 s of silence: a final per phrase as it ends (a
    full-context model re-decoded, or a streaming one), times from the start of the stream,
    and an empty last final at the stop."""
    asr = ctcasr.load(request.getfixturevalue(model))
    rng = np.random.default_rng(4)
    a, b = utterance(rng, words=3, seed=40)[0], utterance(rng, words=2, seed=41)[0]
    gap = np.zeros(3 * SR // 2, np.float32)
    server = Server(asr, Endpoint(silence_s=1.0))
    try:
        msgs = messages(server.ws, np.concatenate([a, gap, b, gap]))
    finally:
        server.stop()
    finals = [m for m in msgs if m["type"] == "final"]
    assert [m["segment"] for m in finals] == [0, 1, 2] and msgs[-1] is finals[-1]
    assert [m["last"] for m in finals] == [False, False, True]
    assert [m["text"] for m in finals] == [asr.transcribe(as_sent(a), SR).text,
                                           asr.transcribe(as_sent(b), SR).text, ""]
    assert len(finals[0]["text"].split()) == 3 and len(finals[1]["text"].split()) == 2
    second = (len(a) + len(gap)) / SR
    assert finals[0]["start"] == 0 and 1.0 < finals[0]["duration"] < second
    assert len(a) / SR < finals[1]["start"] <= finals[1]["words"][0]["start"]
    assert second - 0.1 < finals[1]["words"][0]["start"] < second + 0.5
    # partials come between their segment's start and its final, each tagged with its
    # segment (sent faster than real time, a segment's partials may all fold into its final)
    closed = 0
    for m in msgs:
        assert m["segment"] == closed
        closed += m["type"] == "final"


def test_a_busy_decoder_takes_what_came_meanwhile_in_one_step(full, monkeypatch):
    """While a stream's decoding step runs, the audio that arrives is decoded by one next
    step, not queued a step per message: a server behind real time thins out partials
    instead of falling further behind."""
    from ctcasr.serve import session

    server, asr = full
    wave = as_sent(recording(2))
    steps: list[int] = []
    real = session.Redecode.step

    def step(self):
        out = real(self)
        steps.append(out[2])
        for _ in range(3000):  # the first step lasts until all the audio has come
            if self.samples == len(wave):
                break
            time.sleep(0.01)
        return out

    monkeypatch.setattr(session.Redecode, "step", step)
    msgs = messages(server.ws, wave, chunk=400)  # 80 messages, a step due every 20
    assert len(steps) == 2 and steps[0] < len(wave) and steps[1] == len(wave)
    partials = [m for m in msgs if m["type"] == "partial"]
    assert [round(m["audio_s"] * SR) for m in partials] == steps[: len(partials)]
    assert msgs[-1]["type"] == "final" and msgs[-1]["text"] == asr.transcribe(wave, SR).text


def test_partials_are_greedy_and_finals_decode_as_the_model_carries(full):
    """A full-context model re-decodes the open segment for every partial: greedily (beam + LM
    each second outran two cores at four streams); the final decodes as the model carries.
    Here the carried decoder is a beam with a strongly boosted hotword, so it differs."""
    from ctcasr.serve.session import Redecode

    _, asr = full
    carried = asr.with_settings(asr.settings.override(
        decoder="beam", hotwords=hotword_list(["ab"], boost=30.0)))
    greedy = asr.with_settings(asr.settings.override(decoder="greedy"))

    def differ(w: np.ndarray) -> bool:  # on the whole and on a prefix a partial decodes
        return all(carried.transcribe(w[:n], SR).text != greedy.transcribe(w[:n], SR).text
                   for n in (len(w), len(w) // SR * SR))

    wave = next((w for w in (as_sent(recording(seed)) for seed in (7, 1, 2, 3)) if differ(w)),
                None)
    assert wave is not None  # the boost changes the text of one of these recordings at least
    dec = Redecode(carried, SR, every=0.5, endpoint=None)
    partials, sent = [], 0
    for i in range(0, len(wave), SR // 4):
        chunk = wave[i : i + SR // 4]
        sent += len(chunk)
        dec.add(chunk)
        if dec.due():
            finals, text, covered = dec.step()
            assert finals == [] and covered == sent
            if text is not None:
                partials.append((sent, text))
    assert len(partials) >= 2
    for n, text in partials:
        assert text == greedy.transcribe(wave[:n], SR).text
    assert dec.finish()[0].text == carried.transcribe(wave, SR).text
