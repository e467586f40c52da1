"""JSON-Lines manifests: one utterance per line.

``{"id": "utt1", "audio": "wav/utt1.wav", "duration": 1.23, "text": "yes no"}``

Relative ``audio`` paths resolve against the manifest's folder. An optional ``offset`` (seconds)
makes the utterance the segment ``[offset, offset + duration)`` of the file (as Kaldi's
``segments``); other extra keys are kept in ``Utterance.extra``. Every line is validated on
reading (ids must be unique), and errors name ``file:line``; under ``--skip-bad`` (a skipping
:class:`BadInputs`) bad lines are left out and listed instead. Reading streams: only the ids
seen so far are kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctcasr.data.badinputs import BadInputs
from ctcasr.errors import CtcasrError

REQUIRED_KEYS = ("id", "audio", "duration", "text")


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: Path  # absolute or relative to the current directory, already resolved
    duration: float  # seconds
    text: str
    where: str = ""  # "manifest.jsonl:LINE", for error messages
    offset: float | None = None  # segment start (seconds); None: the whole file
    extra: dict[str, Any] = field(default_factory=dict)


def iter_manifest(
    path: str | Path, require_text: bool = True, bad: BadInputs | None = None
) -> Iterator[Utterance]:
    """Stream a manifest, validating each line. ``require_text=False`` allows empty text."""
    path = Path(path)
    bad = BadInputs() if bad is None else bad
    try:
        f = path.open("rb")
    except OSError as e:
        raise CtcasrError(f"{path}: cannot read manifest: {e.strerror}") from None
    seen: dict[str, int] = {}
    with f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = _decode(raw, path, lineno)
                if not line.strip():
                    continue
                u = _parse_line(line, path, lineno, require_text)
                if u.id in seen:
                    raise CtcasrError(f"{u.where}: duplicate id {u.id!r} (first at line "
                                      f"{seen[u.id]})")
            except CtcasrError as e:
                bad.skip_or_raise(e)
                continue
            seen[u.id] = lineno
            yield u


def read_manifest(
    path: str | Path, require_text: bool = True, bad: BadInputs | None = None
) -> list[Utterance]:
    bad = BadInputs() if bad is None else bad
    before = bad.count
    utts = list(iter_manifest(path, require_text, bad))
    if not utts:
        skipped = f" (its {bad.count - before} line(s) are bad)" if bad.count > before else ""
        raise CtcasrError(f"{path}: manifest is empty{skipped}")
    return utts


def write_manifest(path: str | Path, utts: Iterable[dict[str, Any]]) -> int:
    """Write dicts with at least ``id, audio, duration, text``; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for u in utts:
            missing = [k for k in REQUIRED_KEYS if k not in u]
            if missing:
                raise ValueError(f"utterance {u.get('id')!r} lacks {missing}")
            f.write(json.dumps(u, ensure_ascii=False) + "\n")
            n += 1
    return n


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CtcasrError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start + 1})") from None


def _parse_line(line: str, path: Path, lineno: int, require_text: bool) -> Utterance:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise CtcasrError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise CtcasrError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    keys = REQUIRED_KEYS if require_text else ("id", "audio")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise CtcasrError(f"{where}: missing key(s) {', '.join(missing)}")
    uid, audio, text = obj["id"], obj["audio"], obj.get("text", "")
    duration = obj.get("duration", 0.0)
    if not isinstance(uid, str) or not uid:
        raise CtcasrError(f"{where}: 'id' must be a non-empty string")
    if not isinstance(audio, str) or not audio:
        raise CtcasrError(f"{where}: 'audio' must be a non-empty path string")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise CtcasrError(f"{where}: 'duration' must be a number of seconds, got {duration!r}")
    if not math.isfinite(duration) or duration < 0 or (require_text and duration == 0):
        raise CtcasrError(f"{where}: 'duration' must be positive, got {duration!r}")
    offset = obj.get("offset")
    if offset is not None and (
        isinstance(offset, bool) or not isinstance(offset, (int, float)) or not offset >= 0
    ):
        raise CtcasrError(f"{where}: 'offset' must be a non-negative number of seconds")
    if offset is not None and duration <= 0:
        raise CtcasrError(f"{where}: a segment with 'offset' needs a positive 'duration'")
    if not isinstance(text, str):
        raise CtcasrError(f"{where}: 'text' must be a string")
    text = " ".join(text.split())
    if require_text and not text:
        raise CtcasrError(f"{where}: empty transcript for utterance {uid!r}")
    audio_path = Path(audio)
    if not audio_path.is_absolute():
        audio_path = path.parent / audio_path
    extra = {k: v for k, v in obj.items() if k not in (*REQUIRED_KEYS, "offset")}
    return Utterance(uid, audio_path, float(duration), text, where, offset, extra)
