"""Real-time factor, peak memory and WER of every inference path: eager fp32 (and, with
``--paths``, eager bf16 / fp16: ``--precision``, where the CPU computes in the type), ONNX fp32 /
int8 (``--int8`` on a checkpoint runs the int8 ONNX export), at batch 1 and batched.

    .venv/bin/python benchmarks/inference.py --checkpoint CKPT [--checkpoint CKPT2 ...]
        --manifest TEST.jsonl [--manifest TEST2.jsonl ...] [--random conformer lstm ...]
        [--threads 2] [--max-seconds 0] [--json]

Each ``--checkpoint`` is exported (``ctcasr.infer.export``) to ONNX, float and int8 (fbank in
the graph), and every path transcribes every manifest's audio (``ctcasr.load(...).transcribe``:
reading, resampling, fbank, model, greedy decoding; no timestamps); WER against the manifests'
transcripts. ``--decoder carried`` decodes as each model carries (``ctcasr tune-lm``: beam + LM)
instead of greedily. ``--random ENCODER`` adds a randomly initialised model of that encoder at the
default config sizes (16 kHz, 80 mel bins, x4 subsampling; a 500-word vocabulary), timed on the
same audio (its WER is meaningless). Each (model, path, batch mode) runs in a fresh process, so
its peak RSS (VmHWM) is its own; the first three files are transcribed once before timing.
RTF = processing seconds / audio seconds, the fastest of ``--repeats`` passes; the speed-up is
eager fp32's RTF over the path's. ``--concat K`` transcribes K consecutive utterances as one
input (read into memory before timing), for the speed on longer inputs.
``batch 1`` transcribes file by file; ``batched`` sorts each manifest by length into batches of
up to 120 s of padded audio (the default). A WER shown as "b1 / batched" differs between the
two: dynamic int8 quantises activations with one scale per batch.
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

import torch

# every path, in the table's order: name -> (kind, int8, precision); eager 16-bit is autocast
PATHS = {"eager": ("eager", False, "fp32"), "eager-bf16": ("eager", False, "bf16"),
         "eager-fp16": ("eager", False, "fp16"), "onnx": ("onnx", False, "fp32"),
         "onnx-int8": ("onnx", True, "fp32")}
DEFAULT_PATHS = ["eager", "onnx", "onnx-int8"]


def random_checkpoint(encoder: str, path: Path) -> Path:
    """A randomly initialised model of ``encoder`` at the default config sizes."""
    from ctcasr.checkpoint import model_checkpoint, save_checkpoint
    from ctcasr.config import Config
    from ctcasr.models import build_model
    from ctcasr.tokenizer import WordTokenizer

    cfg = Config.from_dict({"model": {"encoder": encoder}, "tokenizer": {"type": "word"}})
    tok = WordTokenizer([f"w{i:03d}" for i in range(499)])
    dim = cfg.data.features.num_mel_bins
    torch.manual_seed(0)
    model = build_model(cfg.model, dim, tok.vocab_size, torch.zeros(dim), torch.ones(dim))
    save_checkpoint(model_checkpoint(cfg, model, tok), path)
    return path


def worker(args: dict) -> dict:
    """One (model, path, batch mode) in this process: RTF, WER per manifest, peak RSS."""
    import ctcasr
    from ctcasr.data.audio import load_audio
    from ctcasr.data.manifest import read_manifest
    from ctcasr.decode import output_text
    from ctcasr.infer import Source
    from ctcasr.scoring import score

    asr = ctcasr.load(args["model"], int8=args["int8"], threads=args["threads"],
                      precision=args["precision"], timestamps=False,
                      decoder=None if args["decoder"] == "carried" else "greedy")
    if args["batch1"]:
        asr.max_batch = 1
    out = {"manifests": {}}
    total_s = total_audio = 0.0
    for m in args["manifests"]:
        utts = read_manifest(m)
        if args["max_seconds"]:
            keep, s = [], 0.0
            for u in utts:
                if s >= args["max_seconds"]:
                    break
                keep.append(u)
                s += u.duration
            utts = keep
        k = args["concat"]
        groups = [utts[i : i + k] for i in range(0, len(utts), k)]
        if k == 1:
            sources = [Source(u.id, u.audio, offset=u.offset, duration=u.duration)
                       for u in utts]
        else:  # k utterances as one waveform (read before timing)
            sources = [Source(g[0].id, wave=torch.cat([
                load_audio(u.audio, asr.sr, offset=u.offset, duration=u.duration) for u in g]))
                for g in groups]
        list(asr.transcribe_iter(sources[:3]))  # warm-up
        dt = float("inf")
        for _ in range(args["repeats"]):
            t0 = time.perf_counter()
            hyps = [t.text for t in asr.transcribe_iter(sources)]
            dt = min(dt, time.perf_counter() - t0)
        audio = sum(u.duration for u in utts)
        reference = output_text(asr.decoder, asr.tokenizer)[1]  # greedy phones: phone refs
        s = score([reference(" ".join(u.text for u in g)) for g in groups], hyps)[0]
        out["manifests"][Path(m).stem] = {"rtf": dt / audio, "wer": s.wer if s else None,
                                          "audio_s": audio}
        total_s, total_audio = total_s + dt, total_audio + audio
    out["rtf"] = total_s / total_audio
    with open("/proc/self/status") as f:
        out["peak_mib"] = next(int(x.split()[1]) for x in f if x.startswith("VmHWM")) / 1024
    return out


def run_worker(args: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args["threads"])}
    r = subprocess.run([sys.executable, __file__, "--worker", json.dumps(args)],
                       capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"worker {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench(args: argparse.Namespace, tmp: Path) -> None:
    from ctcasr.infer.export import export

    models = [(f"{c.parent.name}/{c.name}", c, True) for c in args.checkpoint]
    models += [(f"{e} (default sizes, random)", random_checkpoint(e, tmp / f"{e}.pt"), False)
               for e in args.random]
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs; audio: "
          f"{', '.join(str(m) for m in args.manifest)}"
          f"{f' (first {args.max_seconds:g} s of each)' if args.max_seconds else ''}"
          f"{f'; random models: first {args.random_seconds:g} s of each' if args.random else ''}"
          f"{f'; {args.concat} utterances per input' if args.concat > 1 else ''}; "
          f"decoder: {args.decoder}; fastest of {args.repeats} passes")
    names = [m.stem for m in args.manifest]
    print(f"| model | path | RTF batch 1 | RTF batched | speed-up b1 / batched | peak RSS MiB "
          f"b1 / batched | {' | '.join(f'WER % {n}' for n in names)} | file MB |")
    print("| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in names) + " | --- |")
    for label, ckpt, scored in models:
        base = None  # eager fp32 RTFs: the speed-up's reference
        for name, (kind, int8, precision) in PATHS.items():
            if name not in args.paths:
                continue
            model, size = ckpt, ckpt.stat().st_size
            if kind != "eager":
                model, _ = export(ckpt, kind, tmp / f"{ckpt.stem}.{name}.onnx", int8=int8)
                size = model.stat().st_size
            rows = {}
            for batch1 in (True, False):
                rows[batch1] = run_worker({
                    "model": str(model), "int8": int8, "precision": precision,
                    "threads": args.threads,
                    "batch1": batch1, "manifests": [str(m) for m in args.manifest],
                    "max_seconds": args.max_seconds if scored else args.random_seconds,
                    "concat": args.concat, "repeats": args.repeats,
                    "decoder": args.decoder})
            b1, bb = rows[True], rows[False]
            base = base or (b1["rtf"], bb["rtf"])
            wers = [f"{b1['manifests'][n]['wer']:.2f}" if scored else "-" for n in names]
            if scored and any(b1["manifests"][n]["wer"] != bb["manifests"][n]["wer"]
                              for n in names):  # int8: activation scales depend on the batch
                wers = [f"{b1['manifests'][n]['wer']:.2f} / {bb['manifests'][n]['wer']:.2f}"
                        for n in names]
            print(f"| {label} | {name} | {b1['rtf']:.4f} | {bb['rtf']:.4f} | "
                  f"{base[0] / b1['rtf']:.2f} / {base[1] / bb['rtf']:.2f} | "
                  f"{b1['peak_mib']:.0f} / {bb['peak_mib']:.0f} | {' | '.join(wers)} | "
                  f"{size / 1e6:.1f} |", flush=True)
            if args.json:
                print(json.dumps({"model": label, "path": name, "batch1": b1, "batched": bb}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, action="append", default=[])
    ap.add_argument("--manifest", type=Path, action="append", default=[])
    ap.add_argument("--random", nargs="*", default=[], help="encoders to time at default sizes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decoder", choices=["greedy", "carried"], default="greedy",
                    help="greedy, or as each model carries (its tuned beam + LM)")
    ap.add_argument("--max-seconds", type=float, default=0.0,
                    help="use at most this much audio of each manifest (0: all)")
    ap.add_argument("--random-seconds", type=float, default=100.0,
                    help="--random models: at most this much audio of each manifest")
    ap.add_argument("--concat", type=int, default=1,
                    help="transcribe K consecutive utterances as one input (longer inputs)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes (the fastest counts)")
    ap.add_argument("--paths", nargs="*", default=DEFAULT_PATHS, choices=list(PATHS))
    ap.add_argument("--json", action="store_true", help="also print every row as JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if not args.manifest:
        ap.error("give at least one --manifest")
    with tempfile.TemporaryDirectory(prefix="ctcasr-bench-") as tmp:
        bench(args, Path(tmp))


if __name__ == "__main__":
    main()
