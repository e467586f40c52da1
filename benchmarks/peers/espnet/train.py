#!/usr/bin/env python3
"""ESPnet2 CTC training on Kaldi-style dirs under a wall-clock budget (run in .venv-espnet).

    train.py --data DIR --config CONF --out DIR [--budget-s 3495] [--stats-only]

``DIR`` is what prepare.py writes. Three calls of ESPnet's own entry point
(``python -m espnet2.bin.asr_train``), as asr.sh's stages 10-11 make them:
  1. ``--collect_stats true``: utterance lengths (the shape files numel batching needs) and the
     global mean / variance of the features (``feats_stats.npz`` for ``global_mvn``);
  2. training, watched: after each epoch (ESPnet's log says whether the best model improved) the
     next epoch's time is taken to be the last one's, and when it would end past the budget the
     trainer is stopped (what train.py of the SpeechBrain peer does between epochs);
  3. ``--resume true --max_epoch N`` (N: the last finished epoch): no epoch is left to run, and
     ESPnet averages the ``keep_nbest_models`` epochs with the lowest valid cer_ctc, as at the end
     of any run (``valid.cer_ctc.ave.pth``).
Writes ``OUT/summary.json``: epochs, training seconds, parameters, valid CER by epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

EPOCH_DONE = re.compile(r"The best model has been updated|There are no improvements in this epoch")
RESULTS = re.compile(r"(\d+)epoch results: .*\[valid\].*?cer_ctc=([0-9.]+)")


def espnet(args: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "espnet2.bin.asr_train", *args]
    with open(log, "w") as f:  # the child keeps its own copy of the file once started
        f.write(" ".join(cmd) + "\n")
        f.flush()
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def wait(proc: subprocess.Popen, log: Path) -> None:
    if proc.wait() != 0:
        sys.exit(f"ESPnet failed (exit {proc.returncode}); the end of {log}:\n"
                 + "".join(log.read_text().splitlines(keepends=True)[-30:]))


def data_args(data: Path, shapes: dict[str, list[Path]]) -> list[str]:
    out = []
    for split in ("train", "valid"):
        out += [f"--{split}_data_path_and_name_and_type", f"{data}/{split}/wav.scp,speech,sound",
                f"--{split}_data_path_and_name_and_type", f"{data}/{split}/text,text,text"]
        out += [a for p in shapes[split] for a in (f"--{split}_shape_file", str(p))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, default=3495.0)
    ap.add_argument("--stats-only", action="store_true",
                    help="stop after collect_stats (kept and reused: not part of the budget)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    tokens = a.data / "tokens.txt"
    common = ["--config", str(a.config), "--use_preprocessor", "true", "--token_type", "char",
              "--token_list", str(tokens), "--non_linguistic_symbols", "none",
              "--cleaner", "none", "--g2p", "none", "--ngpu", "0", "--num_workers", "1"]

    stats = a.out / "stats"
    if not (stats / "train/feats_stats.npz").exists():
        print("-- collect_stats (shapes, global mean and variance)", flush=True)
        keys = {s: [a.data / s / "wav.scp"] for s in ("train", "valid")}
        wait(espnet(common + data_args(a.data, keys) + ["--collect_stats", "true",
                                                        "--output_dir", str(stats)],
                    a.out / "collect_stats.log"), a.out / "collect_stats.log")
    if a.stats_only:
        return
    n_tokens = len(tokens.read_text().split())
    shapes: dict[str, list[Path]] = {}
    for split in ("train", "valid"):  # numel batching counts text as length x vocabulary (asr.sh)
        text_shape = stats / split / "text_shape.char"
        text_shape.write_text("".join(f"{line},{n_tokens}\n" for line in
                                      (stats / split / "text_shape").read_text().split("\n")
                                      if line))
        shapes[split] = [stats / split / "speech_shape", text_shape]
    train_args = common + data_args(a.data, shapes) + [
        "--normalize", "global_mvn", "--normalize_conf",
        f"stats_file={stats}/train/feats_stats.npz", "--output_dir", str(a.out / "model"),
        "--use_tensorboard", "false", "--use_matplotlib", "false"]  # neither is in the lock

    log = a.out / "train.log"
    print(f"-- training, budget {a.budget_s:.0f} s (log: {log})", flush=True)
    start = time.monotonic()
    proc = espnet(train_args, log)
    ends: list[float] = []
    seen = 0
    while proc.poll() is None:
        time.sleep(2)
        done = len(EPOCH_DONE.findall(log.read_text(errors="replace")))
        if done > seen:
            seen = done
            ends.append(time.monotonic() - start)
            last = ends[-1] - (ends[-2] if len(ends) > 1 else 0.0)
            print(f"   epoch {done}: {ends[-1]:.0f} s", flush=True)
            if ends[-1] + last > a.budget_s:
                time.sleep(5)  # let ESPnet finish removing the epochs outside the n-best
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                break
    else:
        wait(proc, log)
    if not ends:
        sys.exit(f"no epoch finished within the budget; see {log}")
    epochs = len(ends)

    print(f"-- averaging the n-best epochs of {epochs} (ESPnet's --resume at max_epoch {epochs})")
    wait(espnet(train_args + ["--resume", "true", "--max_epoch", str(epochs)],
                a.out / "average.log"), a.out / "average.log")
    cer = {int(e): float(c) for e, c in RESULTS.findall(log.read_text(errors="replace"))}
    summary = {"epochs": epochs, "train_seconds": round(ends[-1], 1),
               "epoch_end_seconds": [round(t, 1) for t in ends],
               "valid_cer_by_epoch": cer, "model": str(a.out / "model/valid.cer_ctc.ave.pth")}
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
