#!/usr/bin/env python3
"""Report a speechocean762 experiment by speaker: WER / CER overall, for children (age <= 12)
and adults, and the spread of WER over speakers (median speaker, and the speaker at the 90th
percentile: 10 % of speakers do worse), for each decoder of EXP.

    python local/report.py EXP [--data data] [--set test]

Reads DATA/SET.jsonl (speaker, age and reference per utterance) and EXP/decode_SET_*/hyp.txt;
prints a markdown table and writes it to EXP/report_SET.md (a streaming model's chunked decodes,
decode_SET_chunkN_*, get rows of their own). A phone model's decoders without the
LM give phones: they are scored against the references' phones (through EXP/model.pt's
tokenizer), and their WER is the phone error rate (marked PER).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ctcasr.scoring import score
from ctcasr.tokenizer import PhoneTokenizer, Tokenizer, tokenizer_from_state

CHILD_MAX_AGE = 12
DECODERS = [("greedy", "greedy"), ("beam", "beam"), ("beam_lm", "beam + 3-gram LM")]
PEER = [("peer_beam", "the peer's own beam search")]  # benchmarks/peers: decode_SET_peer_beam


def wer_cer(group: list[dict], hyps: dict[str, str]) -> tuple[float, float]:
    s = score([u["text"] for u in group], [hyps.get(u["id"], "") for u in group])[0]
    return s.wer, s.cer


def model_tokenizer(exp: Path) -> Tokenizer | None:
    ckpt = exp / "model.pt"
    if not ckpt.exists():
        return None
    return tokenizer_from_state(torch.load(ckpt, map_location="cpu", weights_only=True)
                                ["tokenizer"])


def decoders(exp: Path, split: str) -> list[tuple[str, str]]:
    """(tag, name) of each decode of ``split``: full context, then each chunk size of a
    streaming model (``decode_SPLIT_chunkN_*``, run.sh --chunk-sizes), smallest last."""
    chunks = sorted({int(d.name.removeprefix(f"decode_{split}_chunk").split("_")[0])
                     for d in exp.glob(f"decode_{split}_chunk*_*")}, reverse=True)
    return DECODERS + PEER + [(f"chunk{n}_{tag}", f"{name}, chunks of {n} frames")
                       for n in chunks for tag, name in DECODERS]


def rows(exp: Path, data: Path, split: str) -> list[str]:
    words = [json.loads(line) for line in (data / f"{split}.jsonl").open()]
    tok = model_tokenizer(exp)
    phones = isinstance(tok, PhoneTokenizer)
    out = []
    for tag, name in decoders(exp, split):
        utts = words
        if phones and not tag.endswith("beam_lm"):  # phones out: scored on phones
            utts = [{**u, "text": tok.reference(u["text"])} for u in words]
            name += " (phones: PER)"
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
