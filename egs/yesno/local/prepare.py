#!/usr/bin/env python3
"""Prepare the yesno corpus (openslr resource 1): manifests for train / valid / test.

The label sequence is the file name (``0_1_1_0_...wav``: 1 = yes, 0 = no). Split as usual: the
first 31 files (sorted by name) for training, the other 29 for test; the last 4 of the 31 are
held out as the validation set (model selection never sees test).

Why training uses re-cut copies of the files: every one of the first 31 files starts with "no"
and every test file starts with "yes". A bidirectional model learns shortcuts from that and
writes "no" before the first word of every test file (measured: 13.4 % WER, all of it
"yes -> noyes"). Three cues had to go, found one after another: (1) the first word of a
training utterance was always "no"; (2) an 8-word utterance always started with "no" (the
model counts words); (3) each recording starts with ~25 ms of quieter signal than the rest of
its leading silence, and the model tied that onset to "no" (with plain segments, which never
contain the onset, it still wrote "n" on the unseen onset of every test file).

So training utterances are new WAVs cut from each training file in which an energy detector
finds the 8 words: the file's own leading silence (onset included) followed by the words
k..8 (k = 2..8) or by the single word k (k = 1..8), cut in the middle of pauses. Whole files
are left out; validation and test are the untouched files.

    python local/prepare.py CORPUS_DIR OUT_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from ctcasr.data.download import corpus_dir
from ctcasr.data.manifest import write_manifest
from ctcasr.errors import CtcasrError

N_TRAIN, N_VALID = 31, 4


def find_wavs(corpus: Path) -> list[Path]:
    wavs = sorted(p for p in corpus.rglob("*.wav") if set(p.stem) <= set("01_"))
    if len(wavs) != 60:
        sys.exit(f"error: {corpus}: expected the 60 yesno WAV files, found {len(wavs)}")
    return wavs




def entry(wav: Path) -> dict:
    words = ["yes" if c == "1" else "no" for c in wav.stem.split("_")]
    duration = round(sf.info(wav).duration, 4)
    return {"id": wav.stem, "audio": str(wav.resolve()), "duration": duration,
            "text": " ".join(words)}


def word_regions(
    wav: Path, min_gap: float = 0.12, min_word: float = 0.1
) -> list[tuple[float, float]]:
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


def recut(wav: Path, out_dir: Path) -> list[dict]:
    """Write the re-cut training utterances of one file; [] unless its 8 words are found."""
    words = ["yes" if c == "1" else "no" for c in wav.stem.split("_")]
    regions = word_regions(wav)
    if len(regions) != len(words):
        return []
    x, sr = sf.read(wav, dtype="float32")
    pauses = [b[0] - a[1] for a, b in zip(regions, regions[1:], strict=False)]
    lead = max(0.0, regions[0][0] - float(np.median(pauses)) / 2)
    mids = [(a[1] + b[0]) / 2 for a, b in zip(regions, regions[1:], strict=False)]
    cuts = [lead, *mids, len(x) / sr]
    n = len(words)
    spans = sorted({(k, n) for k in range(1, n)} | {(k, k + 1) for k in range(n)})
    out = []
    for a, b in spans:
        start, end = round(cuts[a] * sr), round(cuts[b] * sr)
        audio = np.concatenate([x[: round(lead * sr)], x[start:end]])
        path = out_dir / f"{wav.stem}-{a + 1}-{b}.wav"
        sf.write(path, audio, sr, subtype="PCM_16")
        out.append({"id": path.stem, "audio": str(path.resolve()),
                    "duration": round(len(audio) / sr, 4), "text": " ".join(words[a:b])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus", nargs="?", help="folder with the yesno WAVs; default or "
                    "'download': $CTCASR_DATA/yesno, else downloaded (ctcasr.data.download)")
    ap.add_argument("out", type=Path, help="output folder for train/valid/test.jsonl")
    args = ap.parse_args()
    try:
        corpus = corpus_dir("yesno", args.corpus)
    except CtcasrError as e:
        sys.exit(f"error: {e}")
    wavs = find_wavs(corpus)
    train, test = wavs[:N_TRAIN], wavs[N_TRAIN:]
    wav_dir = args.out / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    segmented = {w: recut(w, wav_dir) for w in train[: N_TRAIN - N_VALID]}
    splits = {
        "train": [u for segs in segmented.values() for u in segs],
        "valid": [entry(w) for w in train[N_TRAIN - N_VALID :]],
        "test": [entry(w) for w in test],
    }
    for name, utts in splits.items():
        n = write_manifest(args.out / f"{name}.jsonl", utts)
        print(f"{args.out / f'{name}.jsonl'}: {n} utterances")
    found = sum(bool(v) for v in segmented.values())
    print(f"(train: re-cut from the {found} of {len(segmented)} files whose 8 words were found)")


if __name__ == "__main__":
    main()
