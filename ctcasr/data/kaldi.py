"""Kaldi data directories -> manifests (``ctcasr import-kaldi``).

A Kaldi data dir has ``text`` (``UTT WORDS...``), ``wav.scp`` (``RECORDING PATH``), and
optionally ``utt2spk`` (``UTT SPEAKER``) and ``segments`` (``UTT RECORDING START END``, seconds;
then the ids of ``text`` are segments of the recordings of ``wav.scp``). Each line of ``text``
becomes one manifest line: ``{"id", "audio", "duration", "text", "speaker"}`` (+ ``"offset"``
for a segment). Durations come from the audio headers (a segment's from its times).

``wav.scp`` must list files: pipe commands (``... |``) and ark offsets (``file.ark:123``) are
refused with the line that has one (convert such audio to files first, e.g. with sox, and list
the files). Relative paths resolve against ``root`` (default: the data dir's parent, where
Kaldi corpora usually keep them; as a recipe's ``data/train`` would, from the recipe folder).

Bad lines follow the bad-input rules: one error naming ``file:line`` and what is wrong, or with
``--skip-bad`` (a skipping :class:`BadInputs`) left out and listed: a text line whose utterance
has no audio (no ``wav.scp`` / ``segments`` entry, or a missing / unreadable file), a duplicate
id in any file, a malformed line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ctcasr.data.audio import audio_duration
from ctcasr.data.badinputs import BadInputs
from ctcasr.errors import CtcasrError


def _table(path: Path, bad: BadInputs, fields: int = 2,
           allow_empty: bool = False) -> dict[str, tuple[list[str], int]]:
    """``{key: (rest, line)}`` of a Kaldi table file; ``fields``: the columns (2: the key and
    the rest of the line; ``allow_empty``: which may be empty)."""
    out: dict[str, tuple[list[str], int]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise CtcasrError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise CtcasrError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split(None, 1) if fields == 2 else line.split()
        where = f"{path}:{lineno}"
        if (len(parts) < fields and not allow_empty) or (fields > 2 and len(parts) != fields):
            bad.skip_or_raise(f"{where}: expected {fields} fields, got {line!r}")
            continue
        key, rest = parts[0], parts[1:] if fields > 2 else [" ".join(parts[1:]).strip()]
        if key in out:
            bad.skip_or_raise(f"{where}: duplicate id {key!r} (first at line {out[key][1]})")
            continue
        out[key] = (rest, lineno)
    return out


def read_map(path: str | Path) -> dict[str, str]:
    """A two-column Kaldi table (``utt2spk``, ``spk2age``, ...) as ``{key: value}``; a bad or
    duplicate line is an error naming it."""
    return {k: v for k, ((v,), _) in _table(Path(path), BadInputs()).items()}


def import_kaldi_dir(data_dir: str | Path, root: str | Path | None = None,
                     bad: BadInputs | None = None) -> Iterator[dict[str, Any]]:
    """Manifest lines (dicts) for the utterances of ``text``, in its order (see module doc)."""
    data_dir = Path(data_dir)
    bad = BadInputs() if bad is None else bad
    root = Path(root) if root is not None else data_dir.resolve().parent
    for name in ("text", "wav.scp"):
        if not (data_dir / name).is_file():
            raise CtcasrError(f"{data_dir}: not a Kaldi data dir (no {name})")
    text = _table(data_dir / "text", bad, allow_empty=True)
    wavs = _table(data_dir / "wav.scp", bad)
    spk = _table(data_dir / "utt2spk", bad) if (data_dir / "utt2spk").is_file() else {}
    segments = _table(data_dir / "segments", bad, fields=4) \
        if (data_dir / "segments").is_file() else None
    durations: dict[str, float] = {}  # per recording, read once

    def audio_of(rec: str, where: str) -> tuple[Path, float]:
        if rec not in wavs:
            raise CtcasrError(f"{where}: no audio: {rec!r} is not in {data_dir / 'wav.scp'}")
        (value,), lineno = wavs[rec]
        scp = f"{data_dir / 'wav.scp'}:{lineno}"
        if value.endswith("|"):
            raise CtcasrError(f"{scp}: pipe commands are not supported ({value!r}): convert "
                              "the audio to files (e.g. with sox) and list the files")
        if _is_ark(value):
            raise CtcasrError(f"{scp}: ark offsets are not supported ({value!r}): list audio "
                              "files")
        path = Path(value) if Path(value).is_absolute() else root / value
        if rec not in durations:
            try:
                durations[rec] = audio_duration(path)
            except CtcasrError as e:
                raise CtcasrError(f"{scp}: {e} (relative paths resolve against {root}; see "
                                  "--root)") from None
        return path, durations[rec]

    for utt, ((words,), lineno) in text.items():
        where = f"{data_dir / 'text'}:{lineno}"
        try:
            line: dict[str, Any] = {"id": utt}
            if segments is None:
                path, duration = audio_of(utt, where)
                line.update(audio=str(path), duration=round(duration, 4))
            else:
                if utt not in segments:
                    raise CtcasrError(f"{where}: no audio: {utt!r} is not in "
                                      f"{data_dir / 'segments'}")
                (rec, start, end), seg_line = segments[utt]
                seg = f"{data_dir / 'segments'}:{seg_line}"
                try:
                    t0, t1 = float(start), float(end)
                except ValueError:
                    raise CtcasrError(f"{seg}: times must be numbers, got {start!r} "
                                      f"{end!r}") from None
                path, rec_duration = audio_of(rec, seg)
                if not 0 <= t0 < t1 or t1 > rec_duration + 0.01:
                    raise CtcasrError(f"{seg}: segment {t0}-{t1} s is not inside {path} "
                                      f"({rec_duration:.2f} s)")
                line.update(audio=str(path), offset=t0, duration=round(t1 - t0, 4))
            line["text"] = words
            if utt in spk:
                line["speaker"] = spk[utt][0][0]
            yield line
        except CtcasrError as e:
            bad.skip_or_raise(e)


def _is_ark(value: str) -> bool:
    head, _, tail = value.rpartition(":")
    return bool(head) and tail.isdigit() and head.endswith(".ark")
