#!/usr/bin/env python3
"""Prepare the yesno corpus (openslr resource 1): manifests for train / valid / test.

The label sequence is the file name (``0_1_1_0_...wav``: 1 = yes, 0 = no). Split as usual: the
first 31 files (sorted by name) for training, the other 29 for test; the last 4 of the 31 are
held out as the validation set (model selection never sees test).

Why the training set also gets word-boundary segments: every one of the first 31 files starts
with "no" and every test file starts with "yes". A bidirectional model learns that shortcut and
emits "no" in the leading silence of every test file (measured: 13.4 % WER, all of it
"yes -> noyes" on the first word). The files are 8 words with clear pauses, so an energy
detector finds the 8 words; for each training file whose 8 words are found we add the 7
suffixes that start in a pause (words k..8, k = 2..8) as segments (``offset`` + ``duration``),
so that the first word of a training utterance is no longer always "no".

    python local/prepare.py CORPUS_DIR OUT_DIR
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

from ctcasr.data.manifest import write_manifest

URL = "https://www.openslr.org/resources/1/waves_yesno.tar.gz"
N_TRAIN, N_VALID = 31, 4


def find_wavs(corpus: Path) -> list[Path]:
    wavs = sorted(p for p in corpus.rglob("*.wav") if set(p.stem) <= set("01_"))
    if len(wavs) != 60:
        sys.exit(f"error: {corpus}: expected the 60 yesno WAV files, found {len(wavs)}")
    return wavs


def download(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "waves_yesno.tar.gz"
    if not archive.exists():
        print(f"downloading {URL} -> {archive}", file=sys.stderr)
        urllib.request.urlretrieve(URL, archive)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "waves_yesno"


def entry(wav: Path) -> dict:
    words = ["yes" if c == "1" else "no" for c in wav.stem.split("_")]
    return {"id": wav.stem, "audio": str(wav.resolve()), "duration": round(sf.info(wav).duration, 4),
            "text": " ".join(words)}


def word_regions(wav: Path, min_gap: float = 0.12, min_word: float = 0.1) -> list[tuple[float, float]]:
    """(start, end) seconds of the speech regions found by a frame-energy threshold."""
    x, sr = sf.read(wav, dtype="float32")
    hop = sr // 100
    rms = np.sqrt(np.convolve(x * x, np.ones(hop * 2) / (hop * 2), mode="same")[::hop])
    speech = rms > 0.2 * rms.max()
    regions: list[list[float]] = []
    for i in np.flatnonzero(speech):
        t = i / 100
        if regions and t - regions[-1][1] < min_gap:
            regions[-1][1] = t
        else:
            regions.append([t, t])
    return [(a, b) for a, b in regions if b - a >= min_word]


def suffix_segments(wav: Path) -> list[dict]:
    full = entry(wav)
    words = full["text"].split()
    regions = word_regions(wav)
    if len(regions) != len(words):
        return []
    out = []
    for k in range(1, len(words)):
        start = round((regions[k - 1][1] + regions[k][0]) / 2, 3)
        out.append({"id": f"{wav.stem}-w{k + 1}", "audio": full["audio"], "offset": start,
                    "duration": round(full["duration"] - start, 4), "text": " ".join(words[k:])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus", type=Path, help="folder with the yesno WAVs (downloaded if absent)")
    ap.add_argument("out", type=Path, help="output folder for train/valid/test.jsonl")
    args = ap.parse_args()
    corpus = args.corpus if args.corpus.is_dir() else download(args.corpus)
    wavs = find_wavs(corpus)
    train, test = wavs[:N_TRAIN], wavs[N_TRAIN:]
    splits = {
        "train": [entry(w) for w in train[: N_TRAIN - N_VALID]],
        "valid": [entry(w) for w in train[N_TRAIN - N_VALID :]],
        "test": [entry(w) for w in test],
    }
    segments = [seg for w in train[: N_TRAIN - N_VALID] for seg in suffix_segments(w)]
    splits["train"] += segments
    for name, utts in splits.items():
        n = write_manifest(args.out / f"{name}.jsonl", utts)
        print(f"{args.out / f'{name}.jsonl'}: {n} utterances")
    print(f"(train includes {len(segments)} word-boundary suffix segments)")


if __name__ == "__main__":
    main()
