"""Peak training memory against corpus size, for each ``data.feature_cache`` mode.

    .venv/bin/python benchmarks/train_memory.py [--base 200] [--scales 1 4 16] \
        [--modes auto memory none] [--steps 200] [--workers 0] [--json rows.json]

A synthetic corpus: ``--distinct`` generated 16 kHz WAVs (chirps + noise, 2-10 s); the manifest
of N utterances cycles through them with distinct ids and transcripts (so every line is its own
utterance to the trainer, as in a real corpus). For each mode and size, a fresh process trains a
small BiLSTM (80 mel bins, speeds 0.9/1.0/1.1, as recipes do) for ``--steps`` steps and reports:

- ``peak_rss_mib``: the largest resident memory of the process and its DataLoader workers
  together (their VmRSS summed, sampled every 50 ms; the process's own VmHWM if larger);
- ``audio_s_per_s``: training audio seconds per wall-clock second over the steps (the first
  pass over the data, which writes the store or fills the cache, is excluded; it is reported
  as ``prepare_s``).

``auto`` is what a run gets without settings (``default`` in the JSON rows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def make_corpus(folder: Path, n: int, distinct: int = 16, seed: int = 0) -> Path:
    """``n`` manifest lines over ``distinct`` WAVs (written once per folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    durations = []
    for k in range(distinct):
        seconds = 2.0 + 8.0 * k / max(distinct - 1, 1)
        durations.append(seconds)
        wav = folder / f"w{k:03d}.wav"
        if not wav.exists():
            t = np.arange(int(seconds * SR)) / SR
            f = 200 + 300 * t / seconds + 20 * k
            x = 0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(wav, x.astype(np.float32), SR)
    words = ["ab", "ba", "abba", "baab"]
    manifest = folder / f"train{n}.jsonl"
    with open(manifest, "w") as f:
        for i in range(n):
            k = i % distinct
            text = " ".join(words[(i + j) % 4] for j in range(1 + int(durations[k]) // 2))
            f.write(json.dumps({"id": f"u{i:06d}", "audio": f"w{k:03d}.wav",
                                "duration": durations[k], "text": text}) + "\n")
    return manifest


def config(mode: str, steps: int, workers: int, speeds: tuple = (0.9, 1.0, 1.1)) -> dict:
    data = {"features": {"sample_rate": SR, "num_mel_bins": 80}, "max_frames_per_batch": 4000,
            "num_workers": workers, "augment": {"speeds": list(speeds)}}
    if mode != "auto":
        data["feature_cache"] = mode
    return {
        "data": data,
        "model": {"frontend": {"subsampling": 4, "channels": 8, "dim": 64},
                  "encoder_conf": {"hidden_size": 64, "num_layers": 1, "dropout": 0.0}},
        "scheduler": {"name": "noam", "warmup_steps": 50, "peak_lr": 1e-3},
        "train": {"epochs": 100, "max_steps": steps, "log_every": 10, "num_threads": 1,
                  "tensorboard": False},
    }


# The child: trains, watching its own and its workers' resident memory.
CHILD = r"""
import json, os, sys, threading, time
from pathlib import Path

def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

def descendants(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            for c in open(f"/proc/{pid}/task/{tid}/children").read().split():
                out += [int(c)] + descendants(int(c))
    except OSError:
        pass
    return out

peak = [0]
def watch():
    me = os.getpid()
    while True:
        peak[0] = max(peak[0], rss_kib(me) + sum(rss_kib(c) for c in descendants(me)))
        time.sleep(0.05)
threading.Thread(target=watch, daemon=True).start()

import logging
seen = {}
class Seen(logging.Handler):
    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("features ("):
            seen["mode"] = msg.split("(")[1].split(")")[0]
        if " parameters" in msg:  # the model line: the pass over the data is done
            seen.setdefault("prepared", time.time())
logging.getLogger("ctcasr").addHandler(Seen())
logging.getLogger("ctcasr").setLevel(logging.INFO)
from ctcasr.config import Config
from ctcasr.train.trainer import train
raw, train_m, exp = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
t0 = time.time()
train(Config.from_dict(raw), train_m, train_m.with_name("valid.jsonl"), exp)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
log = [json.loads(l) for l in open(exp / "train_log.jsonl")]
steps = [r for r in log if "audio_s_per_s" in r]
print(json.dumps({"peak_rss_kib": max(peak[0], hwm), "hwm_kib": hwm,
                  "audio_s_per_s": sum(r["audio_s_per_s"] for r in steps) / max(len(steps), 1),
                  "wall_s": time.time() - t0, "prepare_s": seen["prepared"] - t0,
                  "mode": seen["mode"]}))
"""


def measure(folder: Path, mode: str, n: int, steps: int = 200, workers: int = 0,
            speeds: tuple = (0.9, 1.0, 1.1)) -> dict:
    """Train on ``n`` synthetic utterances in a fresh process; returns its measurements."""
    manifest = make_corpus(folder, n)
    valid = make_corpus(folder, 8)
    valid.replace(folder / "valid.jsonl")
    exp = folder / f"exp_{mode}_{n}"
    shutil.rmtree(exp, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    raw = json.dumps(config(mode, steps, workers, speeds))
    r = subprocess.run([sys.executable, "-c", CHILD, raw,
                        str(manifest), str(exp)], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"training failed ({mode}, {n}):\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    hours = sum(json.loads(line)["duration"] for line in open(manifest)) / 3600
    return {"mode": mode, "default": mode == "auto", "utterances": n,
            "audio_hours": round(hours, 2), "peak_rss_mib": round(out["peak_rss_kib"] / 1024),
            "audio_s_per_s": round(out["audio_s_per_s"], 1), "prepare_s": round(out["prepare_s"]),
            "chosen": out["mode"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=int, default=200, help="utterances at scale 1")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--modes", nargs="+", default=["auto", "memory", "none"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    rows = []
    print("| mode | default | utterances | audio h | peak RSS MiB | audio s/s | prepare s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            for scale in args.scales:
                row = measure(Path(tmp), mode, args.base * scale, args.steps, args.workers)
                rows.append(row)
                name = f"{mode} ({row['chosen']})" if mode == "auto" else mode
                print(f"| {name} | {row['default']} | {row['utterances']} | "
                      f"{row['audio_hours']} | {row['peak_rss_mib']} | {row['audio_s_per_s']} | "
                      f"{row['prepare_s']} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
