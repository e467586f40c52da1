"""Peak memory of ``ctcasr decode`` against the number of utterances in the manifest.

    .venv/bin/python benchmarks/decode_memory.py [--sizes 2000 20000] [--seconds 0.2]

Makes a tiny randomly initialised checkpoint (x4 subsampling, 1-layer BiLSTM of 16) and
``--distinct`` short synthetic WAVs (8 kHz tones of ``--seconds``); the manifest of N utterances
cycles through those files with distinct ids and transcripts. Each size runs ``ctcasr decode`` in
a fresh process (1 thread) and reports that process's peak resident memory (``wait4``'s
``ru_maxrss``) and wall time. Decoding streams the manifest and writes results as it goes, so
the peak should not grow with N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ctcasr.checkpoint import model_checkpoint, save_checkpoint
from ctcasr.config import Config
from ctcasr.models import build_model
from ctcasr.tokenizer import CharTokenizer

SR = 8000
TINY = {
    "data": {"features": {"sample_rate": SR, "num_mel_bins": 23}, "max_frames_per_batch": 2000},
    "model": {"frontend": {"subsampling": 4, "channels": 4, "dim": 16},
              "encoder_conf": {"hidden_size": 16, "num_layers": 1, "dropout": 0.0}},
}
WORDS = ["ab", "ba"]


def make_checkpoint(path: Path) -> Path:
    """A randomly initialised tiny model with a character tokenizer for WORDS."""
    cfg = Config.from_dict(TINY)
    tok = CharTokenizer.train(WORDS)
    dim = cfg.data.features.num_mel_bins
    torch.manual_seed(0)
    model = build_model(cfg.model, dim, tok.vocab_size, torch.zeros(dim), torch.ones(dim))
    save_checkpoint(model_checkpoint(cfg, model, tok), path)
    return path


def make_manifest(folder: Path, n: int, distinct: int, seconds: float) -> Path:
    """``n`` utterances over ``distinct`` WAVs (written once per folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    for k in range(distinct):
        wav = folder / f"w{k:04d}.wav"
        if not wav.exists():
            sf.write(wav, (0.3 * np.sin(2 * np.pi * (200 + 5 * k) * t)).astype(np.float32), SR)
    manifest = folder / f"m{n}.jsonl"
    with manifest.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"utt{i:06d}", "audio": f"w{i % distinct:04d}.wav",
                                "duration": seconds, "text": WORDS[i % 2]}) + "\n")
    return manifest


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """Run a command; return its peak RSS (MiB) and wall seconds. Raises if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {err[-2000:]}")
    return usage.ru_maxrss / 1024, wall  # ru_maxrss is in KiB on Linux


def measure(sizes: list[int], distinct: int, seconds: float, folder: Path) -> list[dict]:
    ckpt = make_checkpoint(folder / "tiny.pt")
    rows = []
    for n in sizes:
        manifest = make_manifest(folder / "wav", n, distinct, seconds)
        out = folder / f"out{n}"
        rss, wall = peak_rss_mb([sys.executable, "-m", "ctcasr", "decode", "--checkpoint",
                                 str(ckpt), "--manifest", str(manifest), "--out-dir", str(out)])
        hyps = sum(1 for _ in (out / "hyp.txt").open())
        rows.append({"utterances": n, "peak_rss_mb": rss, "wall_s": wall, "hyps": hyps})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--distinct", type=int, default=200, help="distinct WAV files")
    ap.add_argument("--seconds", type=float, default=0.2, help="duration of each utterance")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args.sizes, args.distinct, args.seconds, Path(tmp))
    if args.json:
        print(json.dumps(rows))
        return
    print(f"torch {torch.__version__}, 1 thread; tiny random model; {args.seconds:g} s "
          f"utterances over {args.distinct} distinct WAVs; greedy decoding")
    print("| utterances | peak RSS MiB | wall s | hyp.txt lines |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['utterances']} | {r['peak_rss_mb']:.1f} | {r['wall_s']:.1f} | {r['hyps']} |")


if __name__ == "__main__":
    main()
