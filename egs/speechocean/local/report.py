#!/usr/bin/env python3
"""Report a speechocean762 experiment by speaker: WER / CER overall, for children (age <= 12)
and adults, and the spread of WER over speakers (median speaker, and the speaker at the 90th
percentile: 10 % of speakers do worse), for each decoder of EXP.

    python local/report.py EXP [--data data] [--set test]

Reads DATA/SET.jsonl (speaker, age and reference per utterance) and EXP/decode_SET_*/hyp.txt;
prints a markdown table and writes it to EXP/report_SET.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ctcasr.scoring import score

CHILD_MAX_AGE = 12
DECODERS = [("greedy", "greedy"), ("beam", "beam"), ("beam_lm", "beam + 3-gram LM")]


def wer_cer(group: list[dict], hyps: dict[str, str]) -> tuple[float, float]:
    s = score([u["text"] for u in group], [hyps.get(u["id"], "") for u in group])[0]
    return s.wer, s.cer


def rows(exp: Path, data: Path, split: str) -> list[str]:
    utts = [json.loads(line) for line in (data / f"{split}.jsonl").open()]
    out = []
    for tag, name in DECODERS:
        hyp_file = exp / f"decode_{split}_{tag}" / "hyp.txt"
        if not hyp_file.exists():
            continue
        hyps = dict(line.split("\t", 1) if "\t" in line else (line, "")
                    for line in hyp_file.read_text(encoding="utf-8").splitlines())

        kids = [u for u in utts if u["age"] <= CHILD_MAX_AGE]
        grown = [u for u in utts if u["age"] > CHILD_MAX_AGE]
        by_spk: dict[str, list[dict]] = {}
        for u in utts:
            by_spk.setdefault(u["speaker"], []).append(u)
        spk_wer = np.array([wer_cer(g, hyps)[0] for g in by_spk.values()])
        (w, c), (wk, ck), (wa, ca) = (wer_cer(g, hyps) for g in (utts, kids, grown))
        out.append(f"| {name} | {w:.2f} / {c:.2f} | {wk:.2f} / {ck:.2f} | {wa:.2f} / {ca:.2f} "
                   f"| {np.median(spk_wer):.1f} | {np.percentile(spk_wer, 90):.1f} | "
                   f"{len(by_spk)} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("exp", type=Path)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--set", default="test")
    args = ap.parse_args()
    table = ["| decoder | WER / CER % | children | adults | median speaker WER | "
             "90th-percentile speaker WER | speakers |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             *rows(args.exp, args.data, args.set)]
    text = "\n".join(table) + "\n"
    print(text, end="")
    (args.exp / f"report_{args.set}.md").write_text(text)


if __name__ == "__main__":
    main()
