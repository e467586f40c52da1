#!/usr/bin/env python3
"""Beam search (+ word LM) over a peer toolkit's CTC log-posteriors, with ctcasr's decoder.

    python benchmarks/peers/lm_decode.py LOGP_VALID LOGP_TEST --lm LM.arpa --ref-valid REF
        --out DIR [--beam 32] [--lm-weights "0.3 0.5 0.8"] [--word-bonuses "0 1 2"]
        [--unk-penalties "0 -5 -inf"]

``LOGP_*`` are ``torch.save``d dicts ``{"ids", "logp": [T_i, V] tensors, "labels"}`` with the
CTC blank at label 0 and the word boundary as the label " " (what the peer scripts write). The
LM weight, word bonus and OOV penalty are chosen on valid by WER, as the speechocean recipe
does for ctcasr's own model; DIR gets ``decode_test_beam/hyp.txt`` (no LM),
``decode_test_beam_lm/hyp.txt`` and ``lm_tuning.txt``, the layout of a ctcasr experiment, so
that egs/speechocean/local/report.py reports the peer as it reports ctcasr. Peers are thereby
compared on their acoustic models, with the decoder and the LM held equal.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

from ctcasr.decode import DecodeOptions
from ctcasr.scoring import read_text_file, score
from ctcasr.tokenizer import SPACE, CharTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from decode_speed import ctcasr_decoder  # noqa: E402  (length-sorted, padded batches)

# egs/speechocean/run.sh's grid, so that a peer is tuned as ctcasr's own model is (a test checks)
GRID = {"lm_weights": "0.3 0.5 0.8", "word_bonuses": "0 1 2", "unk_penalties": "0 -5 -inf"}


def labels_tokenizer(labels: list[str]) -> CharTokenizer:
    """The peer's label list (blank first, the word boundary as " ") as a ctcasr character
    tokenizer, which the beam search and the LM spelling take as they take ctcasr's own."""
    return CharTokenizer([SPACE if s == " " else s for s in labels[1:]])


def decode(path: Path, opts: DecodeOptions, out: Path, batch: int = 32) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    d = torch.load(path)
    hyps = ctcasr_decoder(labels_tokenizer(d["labels"]), opts, batch)(d["logp"])
    out.write_text("".join(f"{u}\t{h}\n" for u, h in zip(d["ids"], hyps, strict=True)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("logp_valid", type=Path)
    ap.add_argument("logp_test", type=Path)
    ap.add_argument("--lm", required=True)
    ap.add_argument("--ref-valid", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--beam", type=int, default=32)
    for name, values in GRID.items():
        ap.add_argument("--" + name.replace("_", "-"), default=values)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    decode(a.logp_test, DecodeOptions(beam=a.beam), a.out / "decode_test_beam" / "hyp.txt")
    grid = []
    for w, b, u in itertools.product(*(map(float, s.split()) for s in
                                       (a.lm_weights, a.word_bonuses, a.unk_penalties))):
        opts = DecodeOptions(beam=a.beam, lm=a.lm, lm_weight=w, word_bonus=b, unk_penalty=u)
        hyp = decode(a.logp_valid, opts, a.out / "decode_valid_lm" / "hyp.txt")
        refs, hyps = read_text_file(Path(a.ref_valid)), read_text_file(hyp)
        grid.append((score([refs[k] for k in refs], [hyps[k] for k in refs])[0].wer, w, b, u))
        print(f"valid WER {grid[-1][0]:.2f}  lm {w} bonus {b} unk {u}", flush=True)
    wer, w, b, u = min(grid)
    (a.out / "lm_tuning.txt").write_text("".join(f"{g[0]:.2f}\t{g[1]}\t{g[2]}\t{g[3]}\n"
                                                 for g in grid))
    opts = DecodeOptions(beam=a.beam, lm=a.lm, lm_weight=w, word_bonus=b, unk_penalty=u)
    decode(a.logp_test, opts, a.out / "decode_test_beam_lm" / "hyp.txt")
    print(f"chosen on valid: lm {w} bonus {b} unk {u} (valid WER {wer:.2f})")


if __name__ == "__main__":
    main()
