#!/usr/bin/env python3
"""Prepare CMU ARCTIC read speech (one US-English speaker) as train / valid / test manifests.

Reads either layout:
- a converted copy: ``CORPUS/transcripts.tsv`` (``utt<TAB>text``) and ``CORPUS/audio/{utt}.flac``;
- upstream (github.com/rhasspy/dataset-voice-cathy): ``{utt}.wav`` beside ``{utt}.txt``
  (48 kHz stereo; ctcasr's audio reader downmixes and resamples).
Without ``CORPUS`` (or with ``download``), ``ctcasr.data.download`` finds it:
``$CTCASR_DATA/arctic``, else upstream's archive, downloaded once.

Utterances are ``arctic_{phrase}_{take}``. The split is by PHRASE, so all takes of a prompt are
on one side and valid/test sentences are never heard (or read as text) in training. A phrase's
side is a hash of its name, so the split is deterministic, independent of which other phrases
exist and of their order: ``--valid-percent`` and ``--test-percent`` of the phrases.

Text is normalised for training and scoring (``normalise``): lowercase, hyphens become spaces,
apostrophes are kept only inside a word (``i'm``, ``o'brien``; ``'em`` -> ``em``), all other
punctuation is dropped. Numbers are already spelled out in ARCTIC's prompts.

    python local/prepare.py CORPUS OUT_DIR [--valid-percent 6] [--test-percent 10]

Writes OUT_DIR/{train,valid,test}.jsonl (absolute audio paths) and OUT_DIR/text_train.txt (the
normalised training transcripts: the only text the tokenizer and the LM may see).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

from ctcasr.data.audio import audio_duration
from ctcasr.data.download import corpus_dir
from ctcasr.data.manifest import write_manifest
from ctcasr.data.text import normalise
from ctcasr.errors import CtcasrError

UTT = re.compile(r"^arctic_([a-z]\d{4})_(\w+)$")
def phrase_of(utt: str) -> str:
    m = UTT.match(utt)
    if not m:
        raise ValueError(f"{utt!r} is not an ARCTIC utterance name (arctic_{{phrase}}_{{take}})")
    return m.group(1)


def side(phrase: str, valid_percent: float, test_percent: float) -> str:
    """train / valid / test for a phrase, from a hash of its name alone."""
    h = int.from_bytes(hashlib.sha1(phrase.encode()).digest()[:8], "big") / 2**64 * 100
    return "test" if h < test_percent else "valid" if h < test_percent + valid_percent else "train"


def find_utterances(corpus: Path) -> list[tuple[str, Path, str]]:
    """[(utt, audio path, original text)] from either layout, sorted by utt."""
    found: dict[str, tuple[Path, str]] = {}
    tsv = corpus / "transcripts.tsv"
    if tsv.exists():
        audio = {p.stem: p for p in (corpus / "audio").iterdir() if p.is_file()}
        for n, line in enumerate(tsv.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt, sep, text = line.partition("\t")
            if not sep:
                sys.exit(f"error: {tsv}:{n}: expected utt<TAB>text")
            if utt not in audio:
                sys.exit(f"error: {tsv}:{n}: no audio for {utt} in {corpus / 'audio'}")
            found[utt] = (audio[utt], text)
    else:
        for txt in sorted(corpus.rglob("arctic_*.txt")):
            wav = next((p for p in txt.parent.glob(txt.stem + ".*") if p.suffix != ".txt"), None)
            if wav is not None:
                found[txt.stem] = (wav, txt.read_text(encoding="utf-8").strip())
    if not found:
        sys.exit(f"error: {corpus}: no ARCTIC utterances (transcripts.tsv + audio/, "
                 "or arctic_*.txt beside their audio)")
    return [(u, p, t) for u, (p, t) in sorted(found.items())]




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus", nargs="?", help="ARCTIC folder; default or 'download': "
                    "$CTCASR_DATA/arctic, else downloaded (ctcasr.data.download)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--valid-percent", type=float, default=6.0)
    ap.add_argument("--test-percent", type=float, default=10.0)
    args = ap.parse_args()
    try:
        corpus = corpus_dir("arctic", args.corpus)
    except CtcasrError as e:
        sys.exit(f"error: {e}")
    sets: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    for utt, path, text in find_utterances(corpus):
        words = normalise(text)
        if not words:
            sys.exit(f"error: {utt}: transcript {text!r} is empty after normalisation")
        try:
            duration = audio_duration(path)
        except CtcasrError as e:
            sys.exit(f"error: {e}")
        name = side(phrase_of(utt), args.valid_percent, args.test_percent)
        sets[name].append({"id": utt, "audio": str(path.resolve()),
                           "duration": round(duration, 4), "text": words})
    args.out.mkdir(parents=True, exist_ok=True)
    for name, utts in sets.items():
        write_manifest(args.out / f"{name}.jsonl", utts)
        phrases = len({phrase_of(u["id"]) for u in utts})
        hours = sum(u["duration"] for u in utts) / 3600
        words = sum(len(u["text"].split()) for u in utts)
        print(f"{name}: {len(utts)} utterances of {phrases} phrases, {hours:.2f} h, {words} words")
    (args.out / "text_train.txt").write_text("".join(u["text"] + "\n" for u in sets["train"]))


if __name__ == "__main__":
    main()
