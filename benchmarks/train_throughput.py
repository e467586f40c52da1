"""Training throughput per encoder on this machine: parameters, audio seconds trained per wall
second, and the share of real (non-padding) frames in the batches.

    .venv/bin/python benchmarks/train_throughput.py [--threads 2] [--seconds 30] [--utts 300]
    .venv/bin/python benchmarks/train_throughput.py --background 0 1 2 [--settings ...]

``--background N ...`` measures the same training with N busy processes beside it (pure-Python
loops at the same priority, one core's worth each: what a laptop's other work looks like) for
each thread setting of ``--settings`` (``SETTINGS`` below: thread counts, OpenMP's wait policy,
ctcasr's ``auto``), each in its own process (OpenMP reads its environment once), and prints one
table: audio seconds per wall second, and the share of the first setting's unloaded figure.

Data: ``--utts`` utterances of ``$CTCASR_DATA/arctic`` (16 kHz English, 0.9-6.2 s) when present,
else synthetic tone sequences of 1-6 s. Features are computed once and cached, so the numbers
are the model's forward + backward + optimizer step through the real training path
(``ASRDataset`` -> ``BucketBatchSampler`` -> ``train_step``), 80 mel bins, x4 subsampling,
``max_frames_per_batch`` 20000 (the default). Each encoder trains for ``--seconds`` after one
warm-up batch. "real frames" compares the duration-bucketed sampler with the same budget filled
in random order.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ctcasr.config import DataConfig, FbankConfig, FrontendConfig, ModelConfig
from ctcasr.data.dataset import ASRDataset
from ctcasr.data.features import frames_for_duration
from ctcasr.data.manifest import Utterance
from ctcasr.data.sampler import BucketBatchSampler
from ctcasr.models import build_model
from ctcasr.tokenizer import CharTokenizer
from ctcasr.train.features import compute_cmvn
from ctcasr.train.threads import ThreadGovernor
from ctcasr.train.trainer import train_step

CORPORA = os.environ.get("CTCASR_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
ARCTIC = Path(CORPORA) / "arctic"
FEATS = FbankConfig(sample_rate=16000, num_mel_bins=80)
MAX_FRAMES = DataConfig().max_frames_per_batch

# The sizes measured: typical small models for ~100 h of data.
MODELS = {
    "lstm 3x256": ("lstm", 256, {"hidden_size": 256, "num_layers": 3, "dropout": 0.1}),
    "gru 3x256": ("gru", 256, {"hidden_size": 256, "num_layers": 3, "dropout": 0.1}),
    "conformer 8x144": ("conformer", 144, {"d_model": 144, "num_layers": 8, "num_heads": 4,
                                           "ffn_dim": 576, "conv_kernel": 15}),
    "transformer 6x256": ("transformer", 256, {"d_model": 256, "num_layers": 6, "num_heads": 4,
                                               "ffn_dim": 1024}),
}


def corpus(n: int, tmp: Path) -> tuple[list[Utterance], str]:
    if (ARCTIC / "transcripts.tsv").exists():
        lines = (ARCTIC / "transcripts.tsv").read_text().splitlines()
        random.Random(0).shuffle(lines)
        utts = []
        for line in lines[:n]:
            uid, text = line.split("\t", 1)
            path = ARCTIC / "audio" / f"{uid}.flac"
            info = sf.info(str(path))
            norm = "".join(c for c in text.lower() if c.isalpha() or c in " '")
            utts.append(Utterance(uid, str(path), info.frames / info.samplerate, norm))
        return utts, f"arctic ({n} utterances)"
    rng = np.random.default_rng(0)
    tmp.mkdir(parents=True, exist_ok=True)
    utts = []
    for i in range(n):
        dur = float(rng.uniform(1.0, 6.0))
        t = np.arange(int(dur * 16000)) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (200 + 100 * (i % 7)) * t * (1 + t))
        sf.write(tmp / f"{i}.wav", wav.astype(np.float32), 16000)
        utts.append(Utterance(str(i), str(tmp / f"{i}.wav"), dur, "ab ba " * int(dur * 2)))
    return utts, f"synthetic ({n} utterances, no arctic copy found)"


def real_share(frames: list[int], batches: list[list[int]]) -> float:
    real = sum(frames[i] for b in batches for i in b)
    padded = sum(len(b) * max(frames[i] for i in b) for b in batches)
    return real / padded


def random_batches(frames: list[int], max_frames: int, seed: int = 0) -> list[list[int]]:
    order = list(range(len(frames)))
    random.Random(seed).shuffle(order)
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * max(frames[j] for j in [*cur, i]) > max_frames:
            out.append(cur)
            cur = []
        cur.append(i)
    return out + [cur]


def bench(name: str, ds: ASRDataset, frames: list[int], vocab: int, mean, std, seconds: float,
          max_frames: int, governor: ThreadGovernor | None = None):
    encoder, dim, conf = MODELS[name]
    cfg = ModelConfig(frontend=FrontendConfig(subsampling=4, channels=64, dim=dim),
                      encoder=encoder, encoder_conf=conf)
    torch.manual_seed(0)
    model = build_model(cfg, FEATS.num_mel_bins, vocab, mean, std)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sampler = BucketBatchSampler(frames, max_frames, shuffle=True, seed=1, sort_noise=0.1)
    batches = [ds.collate([ds[i] for i in b]) for b in sampler.batches(0)]
    train_step(model, opt, batches[:1], len(batches[0]), 5.0)  # warm-up
    audio, n, t0 = 0.0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = batches[n % len(batches)]
        train_step(model, opt, [b], len(b), 5.0)
        if governor is not None:
            governor.step()
        audio += float(b.feat_lens.sum()) * FEATS.frame_shift_ms / 1000
        n += 1
    wall = time.perf_counter() - t0
    return params, audio / wall, n, real_share(frames, sampler.batches(0))


# name -> (torch intra-op threads, or "auto"; extra environment)
SETTINGS = {
    "threads = cores (2)": ("2", {}),
    "threads = cores - 1 (1)": ("1", {}),
    "2, OMP_WAIT_POLICY=passive": ("2", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2, GOMP_SPINCOUNT=10000": ("2", {"GOMP_SPINCOUNT": "10000"}),
    "2, interop threads 1": ("2", {"CTCASR_BENCH_INTEROP": "1"}),
    "auto (ctcasr's default: ThreadGovernor)": ("auto", {}),
}
BUSY = "while True: pass"


def loaded(setting: str, background: int, args: argparse.Namespace) -> float:
    """Audio s / wall s of one worker process under ``background`` busy processes."""
    threads, env = SETTINGS[setting]
    model = args.models.split(",")[0]  # the first one only
    cmd = [sys.executable, __file__, "--worker", "--threads", threads, "--models", model,
           "--seconds", str(args.seconds), "--utts", str(args.utts),
           "--max-frames", str(args.max_frames)]
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(background)]
    try:
        out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                             check=True).stdout
    finally:
        for b in busy:
            b.kill()
            b.wait()
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="2", help="torch intra-op threads, or auto")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--utts", type=int, default=300)
    ap.add_argument("--max-frames", type=int, default=MAX_FRAMES)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--background", type=int, nargs="+",
                    help="busy background processes: one table over these counts")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.background:
        heads = [f"{n} busy" for n in args.background]
        print(f"torch {torch.__version__}, {os.cpu_count()} cores; {args.models.split(',')[0]}, "
              f"max_frames_per_batch {args.max_frames}, {args.seconds:g} s per cell; audio s / "
              f"wall s (share of the first row's unloaded figure)")
        print("| setting | " + " | ".join(heads) + " |")
        print("| --- |" + " --- |" * len(heads))
        base = None
        for setting in args.settings:
            cells = []
            for n in args.background:
                speed = loaded(setting, n, args)
                base = base or speed
                cells.append(f"{speed:.1f} ({100 * speed / base:.0f} %)")
            print(f"| {setting} | " + " | ".join(cells) + " |", flush=True)
        return
    governor = None
    if args.threads == "auto":  # what `ctcasr train` does with train.num_threads: 0
        governor = ThreadGovernor()
    else:
        torch.set_num_threads(int(args.threads))
    if os.environ.get("CTCASR_BENCH_INTEROP"):
        torch.set_num_interop_threads(int(os.environ["CTCASR_BENCH_INTEROP"]))
    utts, what = corpus(args.utts, Path(tempfile.mkdtemp(prefix="ctcasr_bench_")))
    tok = CharTokenizer.train(u.text for u in utts)
    ds = ASRDataset(utts, FEATS, tok, cache_features=True)
    mean, std = compute_cmvn(ds, 0)
    frames = [frames_for_duration(u.duration, FEATS) for u in utts]
    if args.worker:
        _, speed, _, _ = bench(args.models, ds, frames, tok.vocab_size, mean, std, args.seconds,
                               args.max_frames, governor)
        print(f"{speed:.3f}")
        return
    rand = real_share(frames, random_batches(frames, args.max_frames))
    print(f"torch {torch.__version__}, {args.threads} threads, CPU; data: {what}, "
          f"{sum(u.duration for u in utts) / 60:.1f} min; 80 mel, x4 subsampling, "
          f"max_frames_per_batch {args.max_frames}; {args.seconds:g} s per encoder")
    print("| encoder | parameters | audio s / wall s | batches | real frames (bucketed) "
          "| real frames (random order) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.models.split(","):
        params, speed, n, share = bench(name, ds, frames, tok.vocab_size, mean, std, args.seconds,
                                        args.max_frames)
        print(f"| {name} | {params / 1e6:.2f} M | {speed:.1f} | {n} | {100 * share:.1f} % "
              f"| {100 * rand:.1f} % |", flush=True)


if __name__ == "__main__":
    main()
