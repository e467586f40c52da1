"""Run-to-run spread of a recipe: train it with several seeds and report every test set's WER
as mean, min-max and standard deviation.

    .venv/bin/python benchmarks/spread.py RECIPE [--seeds 1 2 3] [--json FILE] [-- RECIPE ARGS]

RECIPE is one of ``RECIPES`` (``digits`` is the main job, ``make digits``); each seed runs
``CMD --seed S --exp NAME_seedS [RECIPE ARGS]`` from the repository root, one after the other,
its output in ``EXP/spread.log``. A seed whose experiment already holds decode results is not run
again (``--rerun`` to force), so an interrupted spread picks up where it stopped. Results are
read from ``EXP/decode_*/summary.json``. The table is printed with the CPU model, torch version
and commit it was measured on; ``--json`` also writes every seed's numbers.

One seed changes everything a run draws at random (initial weights, batch order, dropout,
augmentation), never the data preparation: the test sets are the same for every seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ctcasr.environment import cpu_model

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Recipe:
    command: str  # relative to the repository root
    exp_root: str  # where --exp NAME lands: EXP_ROOT/NAME
    name: str  # the experiment name's stem


RECIPES = {
    "yesno": Recipe("egs/yesno/run.sh", "egs/yesno/exp", "lstm"),
    "digits": Recipe("egs/digits/transfer.sh", "egs/digits/exp", "transfer_short"),
    "digits-scratch": Recipe("egs/digits/run.sh", "egs/digits/exp", "conformer"),
    "arctic": Recipe("egs/arctic/run.sh", "egs/arctic/exp", "lstm"),
    "speechocean": Recipe("egs/speechocean/run.sh", "egs/speechocean/exp", "lstm"),
}


def commit() -> str:
    r = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def results(exp: Path) -> dict[str, dict[str, float]]:
    """decode dir name (without ``decode_``) -> its summary (wer, cer, words)."""
    out = {}
    for f in sorted(exp.glob("decode_*/summary.json")):
        s = json.loads(f.read_text())
        out[f.parent.name.removeprefix("decode_")] = {k: s[k] for k in ("wer", "cer", "words")}
    return out


def run_seed(recipe: Recipe, seed: int, name: str, extra: list[str], rerun: bool) -> Path:
    exp = ROOT / recipe.exp_root / name
    if not rerun and results(exp):
        print(f"seed {seed}: {exp} has results, kept", flush=True)
        return exp
    log = ROOT / recipe.exp_root / f"{name}.spread.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["bash", recipe.command, "--seed", str(seed), "--exp", name,
           *(a.replace("{seed}", str(seed)) for a in extra)]
    print(f"seed {seed}: {' '.join(cmd)} (log: {log.relative_to(ROOT)})", flush=True)
    t0 = time.monotonic()
    with log.open("w") as f:
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        sys.exit(f"seed {seed} failed (exit {r.returncode}); see {log}")
    (exp / "spread_wall_s.txt").write_text(f"{time.monotonic() - t0:.0f}\n")
    print(f"seed {seed}: done in {time.monotonic() - t0:.0f} s", flush=True)
    return exp


def table(per_seed: dict[int, dict[str, dict[str, float]]]) -> list[str]:
    seeds = list(per_seed)
    sets = [k for k in per_seed[seeds[0]] if all(k in r for r in per_seed.values())]
    lines = ["| test set, decoder | WER % mean | min - max | sd | " +
             " | ".join(f"seed {s}" for s in seeds) + " |",
             "| --- | --- | --- | --- |" + " --- |" * len(seeds)]
    for k in sets:
        w = [per_seed[s][k]["wer"] for s in seeds]
        sd = statistics.stdev(w) if len(w) > 1 else 0.0
        lines.append(f"| {k} | {statistics.mean(w):.2f} | {min(w):.2f} - {max(w):.2f} | "
                     f"{sd:.2f} | " + " | ".join(f"{x:.2f}" for x in w) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", choices=list(RECIPES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--name", help="experiment name stem (default: the recipe's)")
    ap.add_argument("--json", type=Path, help="also write every seed's numbers here")
    ap.add_argument("--rerun", action="store_true", help="run seeds that have results again")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:cut])
    args.extra = argv[cut + 1 :]  # for the recipe; {seed} in them becomes each seed
    recipe = RECIPES[args.recipe]
    stem = args.name or recipe.name
    per_seed, wall = {}, {}
    for seed in args.seeds:
        exp = run_seed(recipe, seed, f"{stem}_seed{seed}", args.extra, args.rerun)
        per_seed[seed] = results(exp)
        if (exp / "spread_wall_s.txt").exists():
            wall[seed] = float((exp / "spread_wall_s.txt").read_text())
    where = (f"{cpu_model()}, {torch.get_num_threads()} threads available, torch "
             f"{torch.__version__}, commit {commit()}")
    print(f"\n{args.recipe}: {len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}); {where}")
    if wall:
        print(f"wall time per seed: {', '.join(f'{w:.0f} s' for w in wall.values())}")
    print("\n".join(table(per_seed)))
    if args.json:
        args.json.write_text(json.dumps({
            "recipe": args.recipe, "command": recipe.command, "extra": args.extra,
            "cpu": cpu_model(), "torch": torch.__version__, "commit": commit(),
            "seeds": per_seed, "wall_s": wall}, indent=1) + "\n")


if __name__ == "__main__":
    main()
