#!/usr/bin/env python3
"""ctcasr manifests -> ESPnet's Kaldi-style data directories and character token list.

    prepare.py --train T.jsonl --valid V.jsonl --test X.jsonl --out DIR

Writes ``DIR/{train,valid,test}/{wav.scp,text,utt2spk}`` (sorted by id, as Kaldi's tools want;
the audio stays where the manifest says: ESPnet's ``sound`` reader is soundfile, which reads the
Opus and FLAC files) and ``DIR/tokens.txt``: ESPnet's character list for CTC (``<blank>`` first,
``<unk>``, the training text's characters with the space as ``<space>``, ``<sos/eos>`` last),
what ``asr.sh --token_type char`` writes. Standard library only: runs in either venv.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def read_manifest(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                rows.append({"id": r["id"], "audio": r["audio"], "text": r["text"],
                             "speaker": r.get("speaker", r["id"])})
            except (ValueError, KeyError) as e:
                raise SystemExit(f"{path}:{n}: not a manifest row with id, audio, text "
                                 f"({e})") from None
    return sorted(rows, key=lambda r: r["id"])


def write_dir(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, key in (("wav.scp", "audio"), ("text", "text"), ("utt2spk", "speaker")):
        (out / name).write_text("".join(f"{r['id']} {r[key]}\n" for r in rows), encoding="utf-8")


def token_list(rows: list[dict]) -> list[str]:
    counts = Counter(c for r in rows for c in r["text"])
    chars = sorted(counts, key=lambda c: (-counts[c], c))  # asr.sh orders by frequency
    return ["<blank>", "<unk>"] + ["<space>" if c == " " else c for c in chars] + ["<sos/eos>"]


def main() -> None:
    ap = argparse.ArgumentParser()
    for split in ("train", "valid", "test"):
        ap.add_argument(f"--{split}", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    rows = {s: read_manifest(getattr(a, s)) for s in ("train", "valid", "test")}
    for split, r in rows.items():
        write_dir(r, a.out / split)
    tokens = token_list(rows["train"])
    (a.out / "tokens.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    print(f"{a.out}: " + ", ".join(f"{s} {len(r)}" for s, r in rows.items())
          + f" utterances; {len(tokens)} tokens")


if __name__ == "__main__":
    main()
