"""Load on ``ctcasr serve``: N concurrent WebSocket clients streaming recordings at real-time
pace over loopback, bounded in count and time.

    .venv/bin/python benchmarks/serve_load.py [--checkpoint CKPT] [--random lstm|lstm-uni]
        [--manifest TEST.jsonl] [--streams 1 4 16] [--chunk-ms 100] [--seconds 8]
        [--chunk-size N] [--json FILE]

The server runs as its own process (``ctcasr serve`` on a free 127.0.0.1 port, max streams =
the largest N) and is stopped at the end. Each client sends ``--seconds`` of audio (recordings of
the manifest joined; default: the digits main job's model and its unseen-speaker test set) in
``--chunk-ms`` messages, each when the wall clock reaches its end (real time), then stop. Per
setting, one row: partial latency p50 / p95 (a partial covering ``audio_s`` seconds, received
this long after the client had sent that much audio), final latency p95 (after ``stop``), the
real-time factor (the server's ``compute_s``, time in or waiting for the decoder, over the
audio's duration; mean over streams), errors. ``--random`` times a randomly initialised model of
the default sizes (16 kHz, 80 mel, BiLSTM 3 x 256 ``lstm``, or its one-direction form
``lstm-uni``, which streams), for when no trained model is at hand: latency does not depend on
the weights. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ctcasr.environment import cpu_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = ROOT / "egs/digits/exp/transfer_short/model.pt"


def random_checkpoint(kind: str, path: Path) -> Path:
    from ctcasr.checkpoint import model_checkpoint, save_checkpoint
    from ctcasr.config import Config
    from ctcasr.models import build_model
    from ctcasr.tokenizer import CharTokenizer

    conf = {"bidirectional": kind != "lstm-uni"}
    cfg = Config.from_dict({"model": {"encoder": "lstm", "encoder_conf": conf}})
    tok = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz '"])
    dim = cfg.data.features.num_mel_bins
    torch.manual_seed(0)
    model = build_model(cfg.model, dim, tok.vocab_size, torch.zeros(dim), torch.ones(dim))
    save_checkpoint(model_checkpoint(cfg, model, tok), path)
    return path


def audio(manifest: Path | None, sr: int, seconds: float) -> np.ndarray:
    from ctcasr.data.manifest import read_manifest

    need = int(seconds * sr)
    if manifest is None:  # noise with pauses, when no recordings are given
        rng = np.random.default_rng(0)
        return (0.05 * rng.standard_normal(need) * (np.arange(need) % sr < 0.7 * sr)
                ).astype(np.float32)
    from ctcasr.data.audio import load_audio

    parts, n = [], 0
    for u in read_manifest(manifest):
        w = load_audio(u.audio, sr, u.where, u.offset, u.duration if u.offset else 0.0).numpy()
        parts.append(w)
        n += len(w)
        if n >= need:
            break
    return np.concatenate(parts)[:need]


def start_server(ckpt: Path, *args: str) -> tuple[subprocess.Popen, str, dict]:
    """``ctcasr serve CKPT ARGS`` as its own process on a free loopback port, once it answers:
    (the process, its http://127.0.0.1:PORT, its /healthz)."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # its log goes to a file: a pipe nobody reads fills up (64 KB) and then blocks the
    # server's event loop at its next log line (a soak's churn logs thousands)
    log = tempfile.TemporaryFile("w+")
    server = subprocess.Popen([sys.executable, "-m", "ctcasr", "serve", str(ckpt), "--port",
                               str(port), *args], stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(600):
        try:
            return server, f"http://127.0.0.1:{port}", \
                httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        except httpx.HTTPError:
            if server.poll() is not None:
                log.seek(0)
                sys.exit(f"error: the server stopped: {log.read()[-2000:]}")
            time.sleep(0.1)
    server.kill()
    sys.exit("error: the server did not answer in 60 s")


def client(url: str, wave: np.ndarray, sr: int, chunk: int, out: dict) -> None:
    """Stream ``wave`` in real time; ``out`` gets partial_ms (a list), final_ms (after the
    stop), rtf, text (the segments' finals joined) and ``partials_at`` (wall time of each
    partial), or ``error``."""
    from websockets.sync.client import connect

    pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2")
    sent_at: list[tuple[float, float]] = []  # (seconds of audio sent, wall time)
    partial_ms: list[float] = []
    partials_at: list[float] = []
    texts: list[str] = []  # each segment's final
    try:
        with connect(url, max_size=None) as ws:
            ws.send(json.dumps({"type": "start", "sample_rate": sr, "format": "s16le"}))
            done = threading.Event()
            final: dict = {}

            def reader() -> None:
                for m in ws:
                    msg = json.loads(m)
                    now = time.perf_counter()
                    if msg["type"] == "partial":
                        covered = msg["audio_s"]
                        t = next((w for a, w in sent_at if a >= covered - 1e-6), None)
                        if t is not None:
                            partial_ms.append(1000 * (now - t))
                            partials_at.append(time.time())
                    else:
                        final.update(msg, received=now)
                        if msg["type"] == "final" and msg["text"]:
                            texts.append(msg["text"])
                done.set()

            th = threading.Thread(target=reader, daemon=True)
            th.start()
            t0 = time.perf_counter()
            for i in range(0, len(pcm), chunk):
                piece = pcm[i : i + chunk]
                due = t0 + (i + len(piece)) / sr  # real time: a chunk goes when it has "arrived"
                time.sleep(max(0.0, due - time.perf_counter()))
                sent_at.append(((i + len(piece)) / sr, time.perf_counter()))
                ws.send(piece.tobytes())
            stop = time.perf_counter()
            ws.send(json.dumps({"type": "stop"}))
            done.wait(600)
        if final.get("type") != "final":
            out["error"] = final.get("error", "no final result")
            return
        out.update(partial_ms=partial_ms, partials_at=partials_at, text=" ".join(texts),
                   final_ms=1000 * (final["received"] - stop),
                   rtf=final["compute_s"] / (len(wave) / sr))
    except Exception as e:  # noqa: BLE001 (a benchmark counts every failure)
        out["error"] = repr(e)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def model_and_audio(args: argparse.Namespace, prefix: str) -> tuple[Path, Path | None]:
    """The checkpoint (``--checkpoint``, a random ``--random`` one, or the main job's) and the
    manifest whose audio the clients send (``--manifest``, or the main job's george set)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    ckpt = args.checkpoint or (random_checkpoint(args.random, tmp / "random.pt") if args.random
                               else DEFAULT_CKPT)
    if not ckpt.exists():
        sys.exit(f"error: {ckpt} not found: run `make digits` first, or pass --checkpoint or "
                 "--random lstm-uni")
    manifest = args.manifest
    if manifest is None and args.checkpoint is None and not args.random:
        found = sorted((ROOT / "egs/digits/data").glob("*/test_unseen.jsonl"))
        manifest = found[0] if found else None
    return ckpt, manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--random", choices=["lstm", "lstm-uni"])
    ap.add_argument("--manifest", type=Path)
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--chunk-ms", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--chunk-size", type=int, default=0,
                    help="ctcasr serve --chunk-size (a dynamic-chunk Conformer then streams)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    ckpt, manifest = model_and_audio(args, "ctcasr-serve-load-")
    server, base, info = start_server(ckpt, "--max-streams", str(max(args.streams)),
                                      "--chunk-size", str(args.chunk_size))
    rows = []
    try:
        sr = info["sample_rate"]
        wave = audio(manifest, sr, args.seconds)
        chunk = sr * args.chunk_ms // 1000
        name = f"{ckpt.name}{' (random ' + args.random + ')' if args.random else ''}" \
            f"{', streaming' if info['streaming'] else ', full context'}"
        print(f"model {name}, {len(wave) / sr:.1f} s of audio per stream, {args.chunk_ms} ms "
              f"chunks, CPU {cpu_model()}, torch {torch.__version__}")
        print("| streams | p50 partial ms | p95 partial ms | p95 final ms | RTF | errors |\n"
              "| --- | --- | --- | --- | --- | --- |")
        for n in args.streams:
            outs = [{} for _ in range(n)]
            threads = [threading.Thread(target=client, args=(
                base.replace("http", "ws") + "/v1/stream", wave, sr, chunk, o)) for o in outs]
            for t in threads:
                t.start()
            for t in threads:
                t.join(900)
            ok = [o for o in outs if "error" not in o]
            partials = [x for o in ok for x in o["partial_ms"]]
            row = {"model": name, "streams": n, "chunk_ms": args.chunk_ms,
                   "p50_partial_ms": round(pct(partials, 50), 1),
                   "p95_partial_ms": round(pct(partials, 95), 1),
                   "p95_final_ms": round(pct([o["final_ms"] for o in ok], 95), 1),
                   "rtf": round(statistics.mean(o["rtf"] for o in ok), 4) if ok else None,
                   "errors": n - len(ok)}
            rows.append(row)
            print(f"| {n} | {row['p50_partial_ms']} | {row['p95_partial_ms']} | "
                  f"{row['p95_final_ms']} | {row['rtf']} | {row['errors']} |", flush=True)
    finally:
        server.terminate()
        server.wait(30)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
