"""Forward + backward time of the BiLSTM / BiGRU encoder, packed vs reverse-within-length.

    .venv/bin/python benchmarks/rnn_impl.py [--threads 2]

Prints a markdown table (milliseconds, median of 5 runs after a warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ctcasr.config import RNNConfig
from ctcasr.models.rnn import RNNEncoder


def bench(
    rnn: str, impl: str, hidden: int, batch: int, frames: int, dim: int
) -> tuple[float, float]:
    torch.manual_seed(0)
    enc = RNNEncoder(rnn, dim, RNNConfig(hidden, 2, 0.0, True, impl))
    x = torch.randn(batch, frames, dim)
    lens = torch.linspace(frames, frames * 0.6, batch).long()
    fwd, bwd = [], []
    for i in range(6):
        t0 = time.perf_counter()
        y, _ = enc(x, lens)
        t1 = time.perf_counter()
        y.square().sum().backward()
        t2 = time.perf_counter()
        if i:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    return 1e3 * statistics.median(fwd), 1e3 * statistics.median(bwd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; 2-layer bidirectional, "
          "input dim 64, batch 16, lengths T..0.6T")
    print("| rnn | hidden | frames | impl | forward ms | backward ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for rnn in ("lstm", "gru"):
        for hidden, frames in ((64, 160), (256, 160), (256, 400)):
            for impl in ("reverse", "packed"):
                f, b = bench(rnn, impl, hidden, 16, frames, 64)
                print(f"| {rnn} | {hidden} | {frames} | {impl} | {f:.1f} | {b:.1f} |")


if __name__ == "__main__":
    main()
