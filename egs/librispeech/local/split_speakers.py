#!/usr/bin/env python3
"""Split a manifest by speaker into two halves (every other speaker in sorted order), so that no
speaker is in both: Mini LibriSpeech has one dev set and no test set.

    python local/split_speakers.py IN.jsonl FIRST.jsonl SECOND.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ctcasr.data.manifest import write_manifest


def main() -> None:
    src, first, second = map(Path, sys.argv[1:4])
    lines = [json.loads(x) for x in src.read_text(encoding="utf-8").splitlines() if x.strip()]
    order = sorted({str(x["speaker"]) for x in lines})
    half = {s: k % 2 for k, s in enumerate(order)}
    for out, side in ((first, 0), (second, 1)):
        n = write_manifest(out, (x for x in lines if half[str(x["speaker"])] == side))
        print(f"{out}: {n} utterances, {len(order[side::2])} speakers")


if __name__ == "__main__":
    main()
