#!/usr/bin/env python3
"""A recipe's results on its test sets: WER / CER per decoder, and whether the test speakers
were heard in training (the number that matters is on voices never heard).

    python egs/common/report.py EXP [--data DATA] [--sets test ...]

Reads DATA/train.jsonl and DATA/SET.jsonl (``speaker`` per utterance, where the corpus has it),
EXP/lm_tuning.txt and EXP/decode_SET_{greedy,beam,beam_lm}/summary.json; prints a markdown table
and writes it to EXP/report.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DECODERS = [("greedy", "greedy"), ("beam", "beam"), ("beam_lm", "beam + 3-gram LM")]


def speakers(manifest: Path) -> set[str]:
    with manifest.open(encoding="utf-8") as f:
        return {str(u["speaker"]) for u in map(json.loads, f) if u.get("speaker") is not None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exp", type=Path)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--sets", nargs="+", default=["test"])
    args = ap.parse_args()
    heard = speakers(args.data / "train.jsonl")
    tuning = args.exp / "lm_tuning.txt"
    lm = f" ({tuning.read_text().split(' (')[0]})" if tuning.exists() else ""
    lines = ["| test set | speakers (heard in training) | decoder | WER % | CER % | words |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name in args.sets:
        spk = speakers(args.data / f"{name}.jsonl")
        who = f"{len(spk)} ({len(spk & heard)})" if spk else "? (no speaker ids)"
        for tag, decoder in DECODERS:
            p = args.exp / f"decode_{name}_{tag}" / "summary.json"
            if p.exists():
                s = json.loads(p.read_text())
                label = decoder + (lm if tag == "beam_lm" else "")
                lines.append(f"| {name} | {who} | {label} | {s['wer']:.2f} | {s['cer']:.2f} "
                             f"| {s['words']} |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    (args.exp / "report.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
