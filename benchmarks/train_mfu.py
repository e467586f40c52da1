"""How far training is from what the cores can do: model-FLOPs utilisation per encoder.

    .venv/bin/python benchmarks/train_mfu.py [--threads 2] [--steps 8] [--rounds 4]
        [--batch 4x375] [--profile] [--compile] [--before] [--bf16]
        [--models lstm lstm-x6 gru uni-lstm conformer conformer-separable conformer-x6
                  transformer chunked]
        [--espnet .venv-espnet/bin/python]

For each encoder at the speechocean recipe's sizes (80 mel bins, x4 conv front end, characters),
on a batch shaped like that recipe's buckets (``--batch BxT``: utterances x feature frames;
1500-frame budget: 4 x 375 by default); ``lstm-x6`` and ``conformer-x6`` are the BiLSTM and the
Conformer on the x6 front end (a third fewer frames for the encoder: for phones, 7 a second on
speechocean, 13 at the 99th percentile, within x6's 16.7 frames; characters at ~15 do not):

- **GFLOP per training step** (forward + backward): ``torch.utils.flop_counter.FlopCounterMode``
  counts the matrix products and convolutions; a recurrent layer it does not see (on CPU the
  LSTM's one ``aten::lstm`` kernel; the GRU's products it sees) is counted analytically: per
  layer, direction and frame, ``2 x gates x H x (input + H)`` for the input and recurrent
  products, forward, and twice that backward;
- **step ms**: full training steps (``train_step``: forward, CTC loss, backward, clipping,
  AdamW) after two warm-up steps: ``--rounds`` rounds in which each model in turn times
  ``--steps`` steps, and the median round (a CPU's speed drifts by 20 % within minutes, so the
  models compared share the same minutes);
- **MFU**: the achieved GFLOP/s over the **peak** the same threads reach on a large fp32 matrix
  product (2048 x 2048, the best of 5), the ceiling of dense arithmetic on these cores;
- with ``--profile``, where the time goes: the profiler's top operators by self CPU time.

``--compile``: the same with ``train.compile`` (``torch.compile`` of the encoder).
``--before``: each model twice, the first as before ctcasr's own dropout
(``ctcasr.models.dropout``), channels-last front-end weights and the fused AdamW: torch's
``nn.Dropout``, the default layout and AdamW's loop over parameters (torch's default on the
CPU), for the speed-up of the three.
``--bf16``: each model also under bf16 autocast (``train.amp: bf16``; a CPU that computes in
bf16 natively, AVX512-BF16 / AMX-BF16, is needed for it to pay; the GFLOP column counts the
same products).
``--espnet PYTHON``: ESPnet2's CTC Conformer of the same size (``benchmarks/peers/espnet/step.py``
in that interpreter: its own model, built from ``conf/train_ctc_conformer.yaml``, and its
trainer's step) takes its turns in the same rounds, twice: as ESPnet trains (its STFT + mel
front end runs in the step, on the waveform) and fed features as ctcasr's models are.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ctcasr.config import FrontendConfig, ModelConfig, OptimConfig
from ctcasr.data.dataset import Batch
from ctcasr.environment import cpu_model, native_16bit
from ctcasr.models import build_model
from ctcasr.models.dropout import Dropout
from ctcasr.train.setup import adamw
from ctcasr.train.trainer import train_step

VOCAB = 30
CONFORMER = {"d_model": 144, "num_layers": 8, "num_heads": 4, "ffn_dim": 576,
             "conv_kernel": 15, "dropout": 0.1}
NARROW = {"channels": 32, "dim": 256}
WIDE = {"channels": 144, "dim": 144}
RNN = {"hidden_size": 256, "num_layers": 3, "dropout": 0.2}
MODELS = {  # name -> (encoder, encoder_conf, front end: model.frontend's keys; x4 by default)
    "lstm": ("lstm", RNN, NARROW),
    "lstm-x6": ("lstm", RNN, {**NARROW, "subsampling": 6}),
    "gru": ("gru", RNN, NARROW),
    "uni-lstm": ("lstm", {**RNN, "bidirectional": False}, NARROW),
    "conformer": ("conformer", CONFORMER, WIDE),
    "conformer-separable": ("conformer", CONFORMER, {**WIDE, "separable": True}),
    "transformer": ("transformer", {"d_model": 256, "num_layers": 6, "num_heads": 4,
                                    "ffn_dim": 1024, "dropout": 0.1}, NARROW),
    "chunked": ("conformer", {**CONFORMER, "causal": True, "dynamic_chunk": True}, WIDE),
    "conformer-x6": ("conformer", CONFORMER, {**WIDE, "subsampling": 6}),
}


def batch(b: int, t: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([t - 7 * k for k in range(b)])
    u = t // 12  # about 8 characters a second at 100 feature frames a second
    tokens = torch.randint(1, VOCAB, (b, u), generator=g)
    return Batch(torch.randn(b, t, 80, generator=g), lens, tokens, torch.full((b,), u),
                 [f"u{k}" for k in range(b)], list(range(b)), [])


def counted(m: torch.nn.RNNBase) -> bool:
    """Whether FlopCounterMode sees this recurrent layer's products (on CPU the GRU runs
    through ops it counts, the LSTM through one kernel it does not)."""
    x = torch.zeros(2, 3, m.input_size) if m.batch_first else torch.zeros(3, 2, m.input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as c:
        m(x)
    return c.get_total_flops() > 0


def rnn_flops(model: torch.nn.Module, b: int, t_out: int) -> float:
    """Forward + backward FLOPs of the recurrent layers the counter does not see (analytic)."""
    total = 0.0
    for m in model.modules():
        if isinstance(m, (torch.nn.LSTM, torch.nn.GRU)) and not counted(m):
            gates = 4 if isinstance(m, torch.nn.LSTM) else 3
            dirs = 2 if m.bidirectional else 1
            for layer in range(m.num_layers):
                inp = m.input_size if layer == 0 else m.hidden_size * dirs
                total += dirs * 2 * gates * m.hidden_size * (inp + m.hidden_size) * b * t_out
    return 3 * total  # forward, and backward's two products per forward one


def gemm_peak(threads: int, n: int = 2048, dtype: torch.dtype = torch.float32) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def build(name: str, compile_: bool, before: bool, bf16: bool = False) -> dict:
    """The model, its optimizer and its FLOPs per step on ``batch``."""
    encoder, conf, frontend = MODELS[name]
    cfg = ModelConfig(frontend=FrontendConfig(**frontend), encoder=encoder,
                      encoder_conf=conf)
    torch.manual_seed(0)
    model = build_model(cfg, 80, VOCAB, torch.zeros(80), torch.ones(80))
    if before:  # torch's dropout mask, the front end's default layout, AdamW's loop
        for m in model.modules():
            if isinstance(m, Dropout):
                m.__class__ = torch.nn.Dropout
        model.frontend.conv.to(memory_format=torch.contiguous_format)
    if compile_:
        model.encoder = torch.compile(model.encoder, dynamic=True)
    opt = adamw(model, OptimConfig(impl="loop" if before else "auto"), 1e-4)
    return {"name": name + (" (before)" if before else "") + (" bf16" if bf16 else ""),
            "model": model, "opt": opt, "times": [], "bf16": bf16,
            "params": sum(p.numel() for p in model.parameters())}


def espnet(python: str, b: int, t: int, features: bool) -> dict:
    """A row timed by benchmarks/peers/espnet/step.py, a process of ESPnet's own venv."""
    cmd = [python, str(Path(__file__).parent / "peers" / "espnet" / "step.py"),
           "--batch", f"{b}x{t}", "--threads", str(torch.get_num_threads())]
    proc = subprocess.Popen(cmd + (["--features"] if features else []), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)  # its imports' download warnings
    r = {"name": "ESPnet Conformer 8 x 144" + (" (fed features)" if features else
                                                " (front end in the step)"),
         "proc": proc, "times": []}
    r["params"] = ask(r, "params")
    return r


def ask(r: dict, line: str) -> float:
    r["proc"].stdin.write(line + "\n")
    r["proc"].stdin.flush()
    answer = r["proc"].stdout.readline()
    if not answer:
        raise SystemExit(f"{r['name']}: step.py ended (run it alone to see why)")
    return float(answer)


def count_flops(r: dict, x: Batch) -> None:
    if "proc" in r:
        r["gflop"] = ask(r, "flops") / 1e9
        return
    with FlopCounterMode(display=False) as counter:
        out = r["model"](x.feats, x.feat_lens, x.tokens, x.token_lens)
        out.loss.sum().backward()
    r["gflop"] = (counter.get_total_flops() + rnn_flops(r["model"], len(x.ids),
                                                        int(out.out_lens.max()))) / 1e9
    r["opt"].zero_grad()


def time_steps(r: dict, x: Batch, steps: int) -> None:
    if "proc" in r:
        r["times"].append(ask(r, str(steps)))
        return
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(r["model"], r["opt"], [x], len(x.ids), 5.0, autocast=autocast(r))
    r["times"].append((time.perf_counter() - t0) / steps)


def autocast(r: dict) -> torch.autocast | None:
    return torch.autocast("cpu", dtype=torch.bfloat16) if r["bf16"] else None


def profile(r: dict, x: Batch) -> None:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            train_step(r["model"], r["opt"], [x], len(x.ids), 5.0, autocast=autocast(r))
    by_op: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        by_op[e.key] += e.self_cpu_time_total
    total = sum(by_op.values())
    r["top"] = [(k, v / total) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:8]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="steps per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--batch", default="4x375", help="utterances x feature frames")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--before", action="store_true",
                    help="each model also as before: torch's dropout, layout and AdamW loop")
    ap.add_argument("--bf16", action="store_true", help="each model also under bf16 autocast")
    ap.add_argument("--espnet", metavar="PYTHON",
                    help="ESPnet's Conformer too, in this interpreter (.venv-espnet/bin/python)")
    args = ap.parse_args()
    b, t = map(int, args.batch.split("x"))
    peak = gemm_peak(args.threads)
    torch.set_num_threads(args.threads)
    bf16_peak = (f"; bf16 GEMM peak {gemm_peak(args.threads, dtype=torch.bfloat16):.1f} "
            f"(native bf16: {native_16bit()['bf16']}; MFU is against fp32's)") if args.bf16 else ""
    print(f"{cpu_model()}, torch {torch.__version__}, {args.threads} threads; batch {b} x {t} "
          f"frames ({b * t / 100:.1f} s of audio); fp32 GEMM peak {peak:.1f} GFLOP/s{bf16_peak}"
          f"{'; torch.compile' if args.compile else ''}; step time: the median of "
          f"{args.rounds} rounds of {args.steps} steps, the models taking turns")
    x = batch(b, t)
    rows = [build(n, args.compile, old, bf16) for n in args.models
            for old in ([True, False] if args.before else [False])
            for bf16 in ([False, True] if args.bf16 else [False])]
    if args.espnet:
        rows += [espnet(args.espnet, b, t, features) for features in (False, True)]
    for r in rows:
        count_flops(r, x)
        time_steps(r, x, 2)  # warm-up
        r["times"].clear()
    for _ in range(args.rounds):
        for r in rows:
            time_steps(r, x, args.steps)
    print("| encoder | parameters | GFLOP / step | step ms | GFLOP/s | MFU | audio s / s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        step_s = statistics.median(r["times"])
        rate = r["gflop"] / step_s
        print(f"| {r['name']} | {r['params'] / 1e6:.2f} M | {r['gflop']:.2f} | "
              f"{step_s * 1000:.0f} | {rate:.1f} | {100 * rate / peak:.1f} % | "
              f"{b * t / 100 / step_s:.0f} |", flush=True)
    if args.profile:
        print("\nwhere the time goes (self CPU time, top operators):")
        for r in (r for r in rows if "proc" not in r):
            profile(r, x)
            print(f"- {r['name']}: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in r["top"]))


if __name__ == "__main__":
    main()
