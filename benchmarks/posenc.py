"""Which positional scheme for the Conformer: rotary, absolute sinusoidal or none, measured.

    .venv/bin/python benchmarks/posenc.py [--steps 200] [--seeds 0 1 2] [--threads 2]

About 4.5 minutes on 2 CPU cores (6 with ``--schemes rotary abs none abs-noscale``).

Trains the same small Conformer-CTC (conv x4 front end, 3 blocks, d_model 96, 4 heads, ffn 384,
kernel 15, 0.66 M parameters; AdamW, peak lr 2e-3, noam schedule, batches of 4) with each
scheme on real audio, yesno (openslr 1, 60 files of 8 "yes"/"no" words:
``$CTCASR_DATA/yesno``), with word tokens (blank, no, yes). The files are split at random
(seeded, the same for every run): 40 for training, 20 for test; the sorted split of the recipe
is not used because every file in its training part starts with "no" and every test file with
"yes". "test x2" joins the test files in pairs (16 words, ~12 s): twice as long as anything
seen in training, it shows how each scheme handles longer inputs.

Prints a markdown table: per seed, the first step at which the mean training loss (per
utterance) of the last 10 steps is below 1 ("-": never) and that mean at step 100 and at the end;
greedy WER on test and test x2 (summed over the seeds); the median milliseconds per step.
The seed fixes the initial weights, the batches and dropout, the same for every scheme (they add
no parameters), so the schemes are compared on paired runs. Some seeds sit longer on CTC's
all-blank plateau (loss ~7) than others: compare the rows seed by seed.
``abs-noscale`` is ``abs`` without the usual input scale x * sqrt(d_model) (set on the model here;
it is not a config value).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import torch

from ctcasr.config import ConformerConfig, FbankConfig, FrontendConfig, ModelConfig
from ctcasr.data.audio import load_audio
from ctcasr.data.features import CMVNStats, fbank
from ctcasr.decode.greedy import greedy_search
from ctcasr.models import build_model
from ctcasr.models.ctc import ctc_loss
from ctcasr.scoring import score

CORPORA = os.environ.get("CTCASR_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = Path(CORPORA) / "yesno"
WORDS = ["<blank>", "no", "yes"]
FEATS = FbankConfig(sample_rate=8000, num_mel_bins=23)
Utt = tuple[torch.Tensor, list[int]]  # features [T, 23], word ids


def load(folder: Path) -> tuple[list[Utt], list[Utt], list[Utt]]:
    """(train, test, test x2) with a fixed random split."""
    wavs = sorted(folder.glob("*.wav"))
    if len(wavs) != 60:
        raise SystemExit(f"{folder}: expected the 60 yesno WAV files, found {len(wavs)}")
    utts = [
        (fbank(load_audio(w, FEATS.sample_rate), FEATS), [1 + int(c) for c in w.stem.split("_")])
        for w in wavs
    ]
    random.Random(0).shuffle(utts)
    train, test = utts[:40], utts[40:]
    pairs = [
        (torch.cat([a[0], b[0]]), a[1] + b[1]) for a, b in zip(test[::2], test[1::2], strict=True)
    ]
    return train, test, pairs


def collate(utts: list[Utt]) -> tuple[torch.Tensor, ...]:
    x = torch.nn.utils.rnn.pad_sequence([u[0] for u in utts], batch_first=True)
    x_lens = torch.tensor([len(u[0]) for u in utts])
    y = torch.nn.utils.rnn.pad_sequence([torch.tensor(u[1]) for u in utts], batch_first=True)
    y_lens = torch.tensor([len(u[1]) for u in utts])
    return x, x_lens, y, y_lens


def make_model(scheme: str, train: list[Utt]) -> torch.nn.Module:
    """``scheme`` is a ``pos_enc`` value or ``abs-noscale``: ``abs`` without the x * sqrt(d)."""
    stats = CMVNStats.empty(FEATS.num_mel_bins)
    for feats, _ in train:
        stats.add(feats)
    cfg = ModelConfig(
        frontend=FrontendConfig(subsampling=4, channels=16, dim=96),
        encoder="conformer",
        encoder_conf=ConformerConfig(
            d_model=96, num_layers=3, num_heads=4, ffn_dim=384, conv_kernel=15, dropout=0.1,
            pos_enc=scheme.removesuffix("-noscale"),
        ),
    )
    model = build_model(cfg, FEATS.num_mel_bins, len(WORDS), *stats.mean_std())
    if scheme == "abs-noscale":
        model.encoder.xscale = 1.0
    return model


def wer(model: torch.nn.Module, utts: list[Utt]) -> tuple[int, int]:
    """(word errors, reference words) of greedy decoding."""
    model.eval()
    x, x_lens, _, _ = collate(utts)
    with torch.no_grad():
        hyps = greedy_search(*model(x, x_lens))
    refs = [" ".join(WORDS[i] for i in u[1]) for u in utts]
    hyp_text = [" ".join(WORDS[i] for i in h[0].tokens) for h in hyps]
    s, _ = score(refs, hyp_text)
    return s.substitutions + s.deletions + s.insertions, s.words


def run(scheme: str, seed: int, args: argparse.Namespace, data: tuple[list[Utt], ...]) -> dict:
    train, test, pairs = data
    torch.manual_seed(seed)
    model = make_model(scheme, train)
    opt = torch.optim.AdamW(model.parameters(), lr=1.0, betas=(0.9, 0.98), weight_decay=0.01)
    rng = random.Random(seed)
    losses, times, reached = [], [], None
    for step in range(1, args.steps + 1):
        for g in opt.param_groups:  # linear warmup, then inverse square root (noam)
            g["lr"] = args.lr * min(step / args.warmup, (args.warmup / step) ** 0.5)
        x, x_lens, y, y_lens = collate(rng.sample(train, args.batch))
        model.train()
        t0 = time.perf_counter()
        log_probs, out_lens = model(x, x_lens)
        loss = ctc_loss(log_probs, out_lens, y, y_lens).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        if reached is None and step >= 10 and statistics.mean(losses[-10:]) < 1.0:
            reached = step
    return {
        "reached": reached,
        "loss100": statistics.mean(losses[90:100]),
        "loss": statistics.mean(losses[-10:]),
        "test": wer(model, test),
        "x2": wer(model, pairs),
        "ms": 1e3 * statistics.median(times),
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--schemes", nargs="+", default=["rotary", "abs", "none"],
                    help="pos_enc values, and abs-noscale")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.data)
    print(f"torch {torch.__version__}, {args.threads} threads; yesno 40 train / 20 test files; "
          f"{args.steps} steps of {args.batch} utterances; seeds {' '.join(map(str, args.seeds))}")
    print(f"| pos_enc | steps to loss < 1 | loss at step 100 | loss at step {args.steps} "
          "| test WER | test x2 WER | ms / step |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for scheme in args.schemes:
        runs = [run(scheme, seed, args, data) for seed in args.seeds]
        cells = [" / ".join(str(r["reached"] or "-") for r in runs)]
        for key in ("loss100", "loss"):
            cells.append(" / ".join(f"{r[key]:.2f}" for r in runs))
        for key in ("test", "x2"):
            errors, words = sum(r[key][0] for r in runs), sum(r[key][1] for r in runs)
            cells.append(f"{100 * errors / words:.2f} % ({errors}/{words})")
        cells.append(f"{statistics.mean(r['ms'] for r in runs):.0f}")
        print(f"| {scheme} | {' | '.join(cells)} |", flush=True)
    print(f"(a / b / c: one value per seed; {runs[0]['params'] / 1e6:.2f} M parameters)")

if __name__ == "__main__":
    main()
