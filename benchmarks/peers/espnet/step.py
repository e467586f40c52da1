#!/usr/bin/env python3
"""ESPnet2's CTC Conformer training step, timed on demand (run in .venv-espnet).

    .venv-espnet/bin/python benchmarks/peers/espnet/step.py [--batch 4x375] [--threads 2]
        [--config conf/train_ctc_conformer.yaml] [--features]

The model is what ``conf/train_ctc_conformer.yaml`` builds through ESPnet's own
``ASRTask.build_model`` (8 x 144 Conformer, CTC only, 30 output units); the step is what
espnet2's trainer does per batch: forward (the model's own STFT + mel front end on the
waveform, utterance mean / variance normalisation, encoder, CTC loss), backward, gradient
clipping, Adam and the warm-up scheduler. ``--features``: no front end, the encoder fed 80-dim
features as ctcasr's step is (its features are computed once, before training).

A batch shaped as ``benchmarks/train_mfu.py``'s: B utterances of T - 7k feature frames (16 kHz,
hop 160) and T // 12 random tokens. Talks on stdin / stdout so that train_mfu.py can time it in
turns with its own models: a line ``N`` runs N steps and answers the seconds per step; ``params``
answers the parameter count, ``flops`` a step's forward + backward FLOPs
(``torch.utils.flop_counter.FlopCounterMode``, as train_mfu.py counts its own); end of input ends
it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

VOCAB = 30
HOP = 160


def build(config: Path, features: bool) -> torch.nn.Module:
    from espnet2.tasks.asr import ASRTask

    tmp = Path(tempfile.mkdtemp())
    tokens = tmp / "tokens.txt"
    tokens.write_text("\n".join(["<blank>", "<unk>", *[f"t{k}" for k in range(VOCAB - 3)],
                                 "<sos/eos>"]) + "\n")
    cmd = ["--config", str(config), "--token_list", str(tokens), "--output_dir", str(tmp),
           "--normalize", "utterance_mvn"]
    if features:
        cmd += ["--input_size", "80"]  # build_model then has no front end
    args = ASRTask.get_parser().parse_args(cmd)
    return ASRTask.build_model(args)


def batch(b: int, t: int, features: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.tensor([t - 7 * k for k in range(b)])
    u = t // 12
    text = torch.randint(2, VOCAB - 1, (b, u), generator=g)
    if features:
        speech, lens = torch.randn(b, t, 80, generator=g), frames
    else:
        lens = (frames - 1) * HOP  # centred STFT: (samples // hop) + 1 frames
        speech = 0.1 * torch.randn(b, int(lens.max()), generator=g)
    return {"speech": speech, "speech_lengths": lens, "text": text,
            "text_lengths": torch.full((b,), u)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="4x375")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", type=Path,
                    default=Path(__file__).parent / "conf" / "train_ctc_conformer.yaml")
    ap.add_argument("--features", action="store_true")
    args = ap.parse_args()
    out, sys.stdout = sys.stdout, sys.stderr  # ESPnet's imports print: answers alone on stdout
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.config, args.features)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    from espnet2.schedulers.warmup_lr import WarmupLR
    sched = WarmupLR(opt, warmup_steps=1000)
    x = batch(*map(int, args.batch.split("x")), args.features)

    def step() -> None:  # espnet2/train/trainer.py's train_one_epoch, per batch
        loss, _, _ = model(**x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
        opt.step()
        opt.zero_grad()
        sched.step()

    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "params":
            print(sum(p.numel() for p in model.parameters()), file=out, flush=True)
            continue
        if cmd == "flops":
            with FlopCounterMode(display=False) as counter:
                model(**x)[0].backward()
            opt.zero_grad()
            print(counter.get_total_flops(), file=out, flush=True)
            continue
        n = int(cmd)
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        print((time.perf_counter() - t0) / n, file=out, flush=True)


if __name__ == "__main__":
    main()
