#!/usr/bin/env python3
"""Prepare connected-digit utterances from the Free Spoken Digit Dataset (FSDD).

FSDD holds isolated digits ``{digit}_{speaker}_{index}.wav`` (8 kHz). We build TIDIGITS-like
strings of 1-7 digits by concatenating recordings of ONE speaker with short random pauses
(deterministic from ``--seed``); transcripts are digit words (``zero one ... nine``).

Splits follow FSDD's own rule -- take indices 0-4 are test, 5-49 train/valid -- with valid
taken from indices 5-9 and train from 10-49, so no recording is on two sides. Speakers named
by ``--test-speakers`` are left out of training altogether; all their takes (0-49) form the
unseen-speaker test set. Any speakers found are used; nothing assumes a fixed speaker list.

Each pool (a speaker's recordings of one split) is shuffled and cut into strings of random
length, ``passes`` times (every recording once per pass): test sets use every recording exactly
once. Pauses and a constant noise floor are low-level white noise (so no frame is digital
silence, which no microphone produces).

More voices (``--speechocean DIR``, a speechocean762 copy: Kaldi dirs ``train/`` and ``test/``,
16 kHz, read English from Mandarin-L1 children and adults): its digit-only utterances of
``test/`` (speakers never in training) become a second unseen-speaker test set,
``test_speechocean``; with ``--speechocean-train``, those of ``train/`` are added to training
(as they are: whole utterances, resampled to 8 kHz when read).

    python local/prepare.py CORPUS_DIR OUT_DIR [--test-speakers a,b] [--seed 0]
                            [--speechocean DIR [--speechocean-train]]

Writes OUT_DIR/{train,valid,test,test_unseen[,test_speechocean]}.jsonl and the WAVs under
OUT_DIR/wav/.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

from ctcasr.data.download import corpus_dir
from ctcasr.data.kaldi import import_kaldi_dir
from ctcasr.data.manifest import write_manifest
from ctcasr.errors import CtcasrError

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")
SR = 8000


def find_recordings(corpus: Path) -> dict[str, list[tuple[int, int, Path]]]:
    """speaker -> [(digit, take, path)]."""
    out: dict[str, list[tuple[int, int, Path]]] = defaultdict(list)
    for p in sorted(corpus.rglob("*.wav")):
        m = NAME.match(p.name)
        if m:
            out[m.group(2)].append((int(m.group(1)), int(m.group(3)), p))
    if not out:
        sys.exit(f"error: {corpus}: no FSDD recordings ({{digit}}_{{speaker}}_{{index}}.wav)")
    return dict(out)




def strings(pool: list, passes: int, rng: random.Random, max_digits: int) -> list[list]:
    out = []
    for _ in range(passes):
        items = pool[:]
        rng.shuffle(items)
        while items:
            n = rng.randint(1, max_digits)
            out.append(items[:n])
            items = items[n:]
    return out


def render(recs: list[tuple[int, int, Path]], rng: random.Random) -> np.ndarray:
    floor = 10 ** rng.uniform(-4, -3)  # noise floor, -80..-60 dBFS

    def pause() -> np.ndarray:
        return np.zeros(int(rng.uniform(0.05, 0.3) * SR), dtype=np.float32)

    parts = [pause()]
    for _, _, path in recs:
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
        if sr != SR:
            sys.exit(f"error: {path}: expected {SR} Hz, found {sr} Hz")
        parts += [wav.mean(axis=1), pause()]
    out = np.concatenate(parts)
    nrng = np.random.default_rng(rng.getrandbits(32))
    return (out + floor * nrng.standard_normal(len(out))).astype(np.float32)


def build(name: str, pools: dict[str, list], passes: int, out: Path, rng: random.Random,
          max_digits: int) -> list[dict]:
    (out / "wav" / name).mkdir(parents=True, exist_ok=True)
    utts = []
    for spk in sorted(pools):
        for n, recs in enumerate(strings(pools[spk], passes, rng, max_digits)):
            uid = f"{spk}-{name}-{n:05d}"
            wav = render(recs, rng)
            path = out / "wav" / name / f"{uid}.wav"
            sf.write(path, wav, SR, subtype="PCM_16")
            text = " ".join(WORDS[d] for d, _, _ in recs)
            utts.append({"id": uid, "audio": f"wav/{name}/{uid}.wav",
                         "duration": round(len(wav) / SR, 4), "text": text, "speaker": spk})
    write_manifest(out / f"{name}.jsonl", utts)
    return utts


def speechocean_digits(corpus: Path, split: str) -> list[dict]:
    """The utterances of speechocean762 ``split`` whose words are all digits."""
    try:
        utts = list(import_kaldi_dir(corpus / split, root=corpus))
    except CtcasrError as e:
        sys.exit(f"error: {e}")
    out = []
    for u in utts:
        words = u["text"].lower().split()
        if words and all(w in WORDS for w in words):
            out.append({**u, "audio": str(Path(u["audio"]).resolve()), "text": " ".join(words),
                        "speaker": f"so{u['speaker']}"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus", nargs="?", help="FSDD folder (with recordings/); default or "
                    "'download': $CTCASR_DATA/fsdd, else downloaded (ctcasr.data.download)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--test-speakers", default="", help="comma-separated unseen test speakers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-passes", type=int, default=4, help="uses of each train recording")
    ap.add_argument("--max-digits", type=int, default=7)
    ap.add_argument("--speakers", default="", help="only these speakers (for quick tests)")
    ap.add_argument("--speechocean", help="speechocean762 folder (or 'download': found or "
                    "downloaded as the corpus is): its test/ digit strings become the "
                    "test_speechocean set")
    ap.add_argument("--speechocean-train", action="store_true",
                    help="also train on the digit strings of speechocean762 train/")
    args = ap.parse_args()
    try:
        corpus = corpus_dir("fsdd", args.corpus)
    except CtcasrError as e:
        sys.exit(f"error: {e}")
    recs = find_recordings(corpus)
    if args.speakers:
        recs = {s: r for s, r in recs.items() if s in args.speakers.split(",")}
    unseen = [s for s in args.test_speakers.split(",") if s]
    missing = [s for s in unseen if s not in recs]
    if missing:
        sys.exit(f"error: --test-speakers {','.join(missing)} not in {corpus} "
                 f"(speakers: {', '.join(sorted(recs))})")
    seen = [s for s in recs if s not in unseen]
    if not seen:
        sys.exit("error: every speaker is a test speaker; nothing to train on")
    pools = {k: defaultdict(list) for k in ("train", "valid", "test", "test_unseen")}
    for spk, items in recs.items():
        for item in items:
            take = item[1]
            if spk in unseen:
                key = "test_unseen"
            else:
                key = "test" if take < 5 else "valid" if take < 10 else "train"
            pools[key][spk].append(item)
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, passes in (("train", args.train_passes), ("valid", 1), ("test", 1),
                         ("test_unseen", 1)):
        if pools[name]:
            utts = build(name, pools[name], passes, args.out, rng, args.max_digits)
            hours = sum(u["duration"] for u in utts) / 3600
            print(f"{name}: {len(utts)} utterances, {hours:.2f} h, "
                  f"speakers {', '.join(sorted(pools[name]))}")
        else:
            (args.out / f"{name}.jsonl").unlink(missing_ok=True)
    (args.out / "test_speechocean.jsonl").unlink(missing_ok=True)
    if args.speechocean:
        try:
            so = corpus_dir("speechocean762", args.speechocean)
        except CtcasrError as e:
            sys.exit(f"error: {e}")
        test = speechocean_digits(so, "test")
        write_manifest(args.out / "test_speechocean.jsonl", test)
        print(f"test_speechocean: {len(test)} utterances, "
              f"{sum(u['duration'] for u in test) / 3600:.2f} h, "
              f"{len({u['speaker'] for u in test})} speakers")
        if args.speechocean_train:
            extra = speechocean_digits(so, "train")
            with open(args.out / "train.jsonl", "a", encoding="utf-8") as f:
                f.writelines(json.dumps(u) + "\n" for u in extra)
            print(f"train: + {len(extra)} speechocean utterances, "
                  f"{len({u['speaker'] for u in extra})} speakers")


if __name__ == "__main__":
    main()
