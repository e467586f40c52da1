"""A validation set of whole speakers (``ctcasr split``).

What a recipe reports is how a model does on voices it never heard, so the validation set that
chooses epochs and LM settings holds out whole speakers too. Speakers are taken in the order of
a hash of their name (deterministic, independent of the manifest's order and of which other
speakers exist; ``seed`` changes the order) until the validation set holds at least ``share``
of the audio; at least one speaker goes to each side.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from ctcasr.data.manifest import Utterance
from ctcasr.errors import CtcasrError


def _rank(key: str, seed: int) -> bytes:
    return hashlib.sha1(f"{seed}:{key}".encode()).digest()


def speaker_split(utts: list[Utterance], share: float = 0.1, seed: int = 0,
                  by: str = "speaker") -> tuple[list[Utterance], list[Utterance]]:
    """(train, valid): ``valid`` = whole groups (``by``: ``speaker``, or ``utterance``: each
    its own) with at least ``share`` of the audio seconds; both keep the manifest's order."""
    if not 0.0 < share < 1.0:
        raise CtcasrError(f"--valid-share: {share} (need a share between 0 and 1)")
    if by not in ("speaker", "utterance"):
        raise CtcasrError(f"--by: {by!r} (speaker or utterance)")
    keys = []
    for u in utts:
        key = u.id if by == "utterance" else u.extra.get("speaker")
        if key is None:
            raise CtcasrError(f"{u.where}: {u.id} has no speaker; a validation set of whole "
                              "speakers needs them (--by utterance splits by utterance: "
                              "validation then shares voices with training)")
        keys.append(str(key))
    seconds: dict[str, float] = defaultdict(float)
    for key, u in zip(keys, utts, strict=True):
        seconds[key] += u.duration
    if len(seconds) < 2:
        raise CtcasrError(f"{len(seconds)} {by}: cannot hold one out and train on the rest")
    held: set[str] = set()
    total, taken = sum(seconds.values()), 0.0
    for key in sorted(seconds, key=lambda k: _rank(k, seed))[:-1]:  # one stays for training
        if taken >= share * total:
            break
        held.add(key)
        taken += seconds[key]
    train = [u for k, u in zip(keys, utts, strict=True) if k not in held]
    valid = [u for k, u in zip(keys, utts, strict=True) if k in held]
    return train, valid


def manifest_line(u: Utterance) -> dict:
    """``u`` as a manifest line (its audio path absolute)."""
    line = {"id": u.id, "audio": str(Path(u.audio).resolve()), "duration": u.duration,
            "text": u.text}
    if u.offset is not None:
        line["offset"] = u.offset
    return {**line, **u.extra}
