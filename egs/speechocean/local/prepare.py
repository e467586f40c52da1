#!/usr/bin/env python3
"""Prepare speechocean762 (OpenSLR 101: read English, 188 Mandarin-L1 speakers, children and
adults) as train / valid / test manifests, by speaker.

``CORPUS`` is a folder holding the Kaldi data dirs ``train/`` and ``test/`` (``text``,
``wav.scp``, ``utt2spk``, ``spk2age``, ``spk2gender``) with ``wav.scp`` paths relative to
``CORPUS``: the released archive (16-bit WAV under ``WAVE/``) or a re-encoded copy (any audio
soundfile reads). Without ``CORPUS`` (or with ``download``), ``ctcasr.data.download`` finds it:
``$CTCASR_DATA/speechocean762``, else the OpenSLR 101 archive, downloaded once. Both are
imported with ``ctcasr.data.kaldi`` (``ctcasr import-kaldi``).

- Text: ``ctcasr.data.text.normalise`` (lowercase, apostrophes kept inside words).
- Every line gets ``speaker``, ``age`` and ``gender``.
- valid: whole training speakers, ``--valid-children`` aged 12 or less and ``--valid-adults``
  older, chosen by a hash of the speaker id (deterministic, independent of order); never in
  train. test: the released test speakers, none of whom is in train.
- ``--subset N``: only the first N speakers of each split (for tests).

    python local/prepare.py CORPUS OUT_DIR [--valid-children 4] [--valid-adults 4]

Writes OUT_DIR/{train,valid,test}.jsonl (absolute audio paths), OUT_DIR/text_train.txt (the
training transcripts: the only text the tokenizer and the LM see) and OUT_DIR/speakers.tsv
(speaker, age, gender, split).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from ctcasr.data.download import corpus_dir
from ctcasr.data.kaldi import import_kaldi_dir, read_map
from ctcasr.data.manifest import write_manifest
from ctcasr.data.text import normalise
from ctcasr.errors import CtcasrError

CHILD_MAX_AGE = 12


def import_split(corpus: Path, name: str, subset: int = 0) -> list[dict]:
    d = corpus / name
    lines = []
    try:
        age, gender = read_map(d / "spk2age"), read_map(d / "spk2gender")
        for u in import_kaldi_dir(d, root=corpus):
            text = normalise(u["text"])
            if not text:
                sys.exit(f"error: {d / 'text'}: {u['id']}: empty after normalisation")
            spk = u["speaker"]
            lines.append({**u, "audio": str(Path(u["audio"]).resolve()), "text": text,
                          "age": int(age[spk]), "gender": gender.get(spk, "")})
    except CtcasrError as e:
        sys.exit(f"error: {e}")
    except KeyError as e:
        sys.exit(f"error: {d / 'spk2age'}: no age for speaker {e}")
    if subset:
        keep = sorted({u["speaker"] for u in lines})[:subset]
        lines = [u for u in lines if u["speaker"] in keep]
    return lines


def rank(speaker: str) -> int:
    return int.from_bytes(hashlib.sha1(speaker.encode()).digest()[:8], "big")


def valid_speakers(lines: list[dict], children: int, adults: int) -> set[str]:
    ages = {u["speaker"]: u["age"] for u in lines}
    kids = sorted((s for s, a in ages.items() if a <= CHILD_MAX_AGE), key=rank)
    grown = sorted((s for s, a in ages.items() if a > CHILD_MAX_AGE), key=rank)
    return set(kids[:children]) | set(grown[:adults])




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus", nargs="?", help="speechocean762 folder; default or 'download': "
                    "$CTCASR_DATA/speechocean762, else downloaded (ctcasr.data.download)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--valid-children", type=int, default=4)
    ap.add_argument("--valid-adults", type=int, default=4)
    ap.add_argument("--subset", type=int, default=0, help="first N speakers of each split only")
    args = ap.parse_args()
    try:
        corpus = corpus_dir("speechocean762", args.corpus)
    except CtcasrError as e:
        sys.exit(f"error: {e}")
    train = import_split(corpus, "train", args.subset)
    test = import_split(corpus, "test", args.subset)
    held = valid_speakers(train, args.valid_children, args.valid_adults)
    sets = {"train": [u for u in train if u["speaker"] not in held],
            "valid": [u for u in train if u["speaker"] in held], "test": test}
    overlap = {u["speaker"] for u in sets["train"]} & {u["speaker"] for u in test}
    if overlap:
        sys.exit(f"error: speakers in both train and test: {sorted(overlap)[:5]}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = set()
    for name, utts in sets.items():
        write_manifest(args.out / f"{name}.jsonl", utts)
        spk = {u["speaker"] for u in utts}
        kids = {u["speaker"] for u in utts if u["age"] <= CHILD_MAX_AGE}
        hours = sum(u["duration"] for u in utts) / 3600
        words = sum(len(u["text"].split()) for u in utts)
        print(f"{name}: {len(utts)} utterances, {len(spk)} speakers ({len(kids)} aged "
              f"<= {CHILD_MAX_AGE}), {hours:.2f} h, {words} words")
        rows |= {(u["speaker"], u["age"], u["gender"], name) for u in utts}
    (args.out / "text_train.txt").write_text("".join(u["text"] + "\n" for u in sets["train"]))
    (args.out / "speakers.tsv").write_text("speaker\tage\tgender\tsplit\n" + "".join(
        f"{s}\t{a}\t{g}\t{n}\n" for s, a, g, n in sorted(rows)))


if __name__ == "__main__":
    main()
