"""Corpora in the layouts they ship in -> manifests (``ctcasr import FORMAT SRC -o OUT``).

Every importer yields manifest lines ``{"id", "audio", "duration", "text", "speaker", ...}``
(``"offset"`` for a segment of a longer file), in a stable order, with durations from the audio
headers (or from the corpus's own duration table where it has one), and follows the bad-input
rules: a bad row is one error naming ``file:line`` (or the cut's id) and what is wrong, or with
``--skip-bad`` (a skipping :class:`BadInputs`) it is left out and listed.

- **librispeech**: ``SRC`` is a split folder (``LibriSpeech/train-clean-100``) or the folder
  above the splits with ``split``; ``SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt`` lists
  ``SPEAKER-CHAPTER-UTT TEXT`` for the ``.flac`` files beside it. Transcripts (upper case) are
  normalised with :func:`ctcasr.data.text.normalise`.
- **commonvoice**: ``SRC`` is one language's folder (``cv-corpus-*/LANG``) with ``SPLIT.tsv``
  (``train``, ``dev``, ``test``, ``validated``, ...) and ``clips/``. Columns by name (``path``,
  ``sentence``, ``client_id``; ``age``, ``gender``, ``accents`` kept when not empty), no
  quoting (sentences hold quotes); durations from ``clip_durations.tsv`` when present (ms),
  else the MP3 headers (libsndfile >= 1.1 reads MP3). Sentences normalised by ``text_norm``
  (``english``, the default: letters a-z and digits; ``unicode`` for other scripts; ``none``).
- **lhotse**: a cut set (``cuts.jsonl[.gz]``: each cut a segment of a recording, its
  supervisions' texts joined), or ``recordings.jsonl[.gz]`` + ``supervisions.jsonl[.gz]`` (each
  supervision one line). Sources of type ``file`` only (``url`` / ``command`` / ``memory``
  are refused); relative paths resolve against ``root`` (default: the manifest's folder).
- **hf**: a Hugging Face dataset saved to disk or as parquet (:mod:`ctcasr.data.hf`); audio
  held as bytes is written once to ``audio_dir``, as it is.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ctcasr.data.audio import audio_duration
from ctcasr.data.badinputs import BadInputs
from ctcasr.data.text import normalise, normaliser
from ctcasr.errors import CtcasrError

FORMATS = ("kaldi", "librispeech", "commonvoice", "lhotse", "hf")
Line = dict[str, Any]


def import_corpus(fmt: str, src: str | Path, split: str | None = None,
                  root: str | Path | None = None, bad: BadInputs | None = None,
                  text_norm: str = "english", audio_dir: str | Path | None = None,
                  text_column: str | None = None) -> Iterator[Line]:
    """Manifest lines of ``src`` in layout ``fmt`` (one of :data:`FORMATS`); ``audio_dir``
    (hf only, required there): where audio held in the dataset as bytes is written."""
    src, bad = Path(src), BadInputs() if bad is None else bad
    if not src.exists():
        raise CtcasrError(f"{src}: no such file or folder")
    if fmt == "kaldi":
        from ctcasr.data.kaldi import import_kaldi_dir

        return import_kaldi_dir(src / split if split else src, root, bad)
    if fmt == "librispeech":
        return librispeech(src / split if split else src, bad)
    if fmt == "commonvoice":
        return commonvoice(src, split or "train", bad, normaliser(text_norm))
    if fmt == "lhotse":
        return lhotse(src, root, bad)
    if fmt == "hf":
        from ctcasr.data.hf import hf_dataset

        if audio_dir is None:
            raise CtcasrError("hf: give audio_dir, the folder for audio held as bytes")
        return hf_dataset(src, split, Path(audio_dir), root, bad, normaliser(text_norm),
                          text_column)
    raise CtcasrError(f"unknown corpus format {fmt!r} (choose {', '.join(FORMATS)})")


# --------------------------------------------------------------------------- LibriSpeech
def librispeech(split_dir: Path, bad: BadInputs) -> Iterator[Line]:
    transcripts = sorted(split_dir.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise CtcasrError(f"{split_dir}: no SPEAKER/CHAPTER/*.trans.txt here: not a LibriSpeech "
                          "split (give the split's folder, or its parent with --split)")
    for trans in transcripts:
        speaker, chapter = trans.parent.parent.name, trans.parent.name
        for lineno, raw in enumerate(_read_lines(trans), start=1):
            if not raw.strip():
                continue
            where = f"{trans}:{lineno}"
            try:
                utt, _, text = raw.strip().partition(" ")
                if not utt.startswith(f"{speaker}-{chapter}-"):
                    raise CtcasrError(f"{where}: utterance {utt!r} is not of speaker {speaker}, "
                                      f"chapter {chapter}")
                audio = trans.parent / f"{utt}.flac"
                yield {"id": utt, "audio": str(audio.resolve()),
                       "duration": round(audio_duration(audio, where), 4),
                       "text": normalise(text), "speaker": speaker, "chapter": chapter}
            except CtcasrError as e:
                bad.skip_or_raise(e if str(e).startswith(where) else f"{where}: {e}")


# --------------------------------------------------------------------------- Common Voice
def commonvoice(lang_dir: Path, split: str, bad: BadInputs,
                norm: Callable[[str], str] = normalise) -> Iterator[Line]:
    tsv = lang_dir / f"{split}.tsv"
    if not tsv.is_file():
        have = ", ".join(sorted(p.stem for p in lang_dir.glob("*.tsv"))) or "none"
        raise CtcasrError(f"{tsv}: not found (the split tables here: {have})")
    durations = _clip_durations(lang_dir / "clip_durations.tsv")
    rows = csv.DictReader(_read_lines(tsv), delimiter="\t", quoting=csv.QUOTE_NONE)
    missing = {"path", "sentence", "client_id"} - set(rows.fieldnames or ())
    if missing:
        raise CtcasrError(f"{tsv}:1: no column {', '.join(sorted(missing))} in the header")
    for lineno, row in enumerate(rows, start=2):
        where = f"{tsv}:{lineno}"
        try:
            if None in row or any(v is None for v in row.values()):
                raise CtcasrError(f"{where}: expected {len(rows.fieldnames or ())} "
                                  "tab-separated fields")
            clip = row["path"].strip()
            text = norm(row["sentence"])
            if not clip or not text:
                raise CtcasrError(f"{where}: empty {'path' if not clip else 'sentence'}")
            audio = lang_dir / "clips" / clip
            if not audio.is_file():
                raise CtcasrError(f"{where}: audio file not found: {audio}")
            duration = durations.get(clip) or audio_duration(audio, where)
            line: Line = {"id": Path(clip).stem, "audio": str(audio.resolve()),
                          "duration": round(duration, 4), "text": text,
                          "speaker": row["client_id"]}
            line.update({k: row[k] for k in ("age", "gender", "accents") if row.get(k)})
            yield line
        except CtcasrError as e:
            bad.skip_or_raise(e)


def _clip_durations(path: Path) -> dict[str, float]:
    """``clip_durations.tsv`` (``clip`` and ``duration[ms]``) as seconds, if it is there."""
    if not path.is_file():
        return {}
    out = {}
    for lineno, row in enumerate(csv.reader(_read_lines(path), delimiter="\t"), start=1):
        if lineno == 1 or not row:
            continue
        try:
            out[row[0]] = float(row[1]) / 1000
        except (IndexError, ValueError):
            raise CtcasrError(f"{path}:{lineno}: expected 'clip<TAB>milliseconds', got "
                              f"{chr(9).join(row)!r}") from None
    return out


# --------------------------------------------------------------------------- Lhotse
def lhotse(src: Path, root: str | Path | None, bad: BadInputs) -> Iterator[Line]:
    """``src``: a cuts manifest, or a folder / recordings manifest with its supervisions."""
    if src.is_dir():
        cuts = _find(src, "cuts")
        if cuts:
            return _lhotse_cuts(cuts, root, bad)
        recs, sups = _find(src, "recordings"), _find(src, "supervisions")
        if not (recs and sups):
            raise CtcasrError(f"{src}: no lhotse manifests here (*cuts*.jsonl[.gz], or "
                              "*recordings*.jsonl[.gz] and *supervisions*.jsonl[.gz])")
        return _lhotse_supervisions(recs, sups, root, bad)
    if "supervisions" in src.name or "recordings" in src.name:
        recs = src if "recordings" in src.name else _sibling(src, "supervisions", "recordings")
        sups = src if "supervisions" in src.name else _sibling(src, "recordings", "supervisions")
        return _lhotse_supervisions(recs, sups, root, bad)
    return _lhotse_cuts(src, root, bad)


def _find(folder: Path, kind: str) -> Path | None:
    found = sorted(folder.glob(f"*{kind}*.jsonl")) + sorted(folder.glob(f"*{kind}*.jsonl.gz"))
    if len(found) > 1:
        raise CtcasrError(f"{folder}: several {kind} manifests ({', '.join(p.name for p in found)}"
                          "): give the one to import")
    return found[0] if found else None


def _sibling(path: Path, this: str, other: str) -> Path:
    sib = path.with_name(path.name.replace(this, other))
    if not sib.is_file():
        raise CtcasrError(f"{path}: its {other} manifest {sib} is not there")
    return sib


def _jsonl(path: Path, bad: BadInputs) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, object)`` per line of a (gzipped) JSON-lines file; a line that is not a JSON
    object is a bad input."""
    for lineno, raw in enumerate(_read_lines(path), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            bad.skip_or_raise(f"{where}: not JSON ({e.msg})")
            continue
        if not isinstance(obj, dict):
            bad.skip_or_raise(f"{where}: expected a JSON object")
            continue
        yield where, obj


def _recording_audio(rec: dict[str, Any], base: Path, where: str) -> tuple[Path, float]:
    """The file and duration of a lhotse Recording (one ``file`` source)."""
    try:
        sources, duration = rec["sources"], float(rec["duration"])
        types = {s["type"] for s in sources}
    except (KeyError, TypeError, ValueError) as e:
        raise CtcasrError(f"{where}: recording {rec.get('id')!r} lacks {e}") from None
    if types != {"file"} or len(sources) != 1:
        raise CtcasrError(f"{where}: recording {rec.get('id')!r} has sources of type "
                          f"{', '.join(sorted(types))} ({len(sources)}): only one audio file "
                          "per recording is supported (store the audio as files first)")
    path = Path(sources[0]["source"])
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise CtcasrError(f"{where}: audio file not found: {path}")
    return path, duration


def _segment(where: str, uid: str, path: Path, rec_duration: float, start: float,
             duration: float) -> Line:
    if not (0 <= start and duration > 0 and start + duration <= rec_duration + 0.01):
        raise CtcasrError(f"{where}: {uid!r} spans {start}-{start + duration} s, not inside "
                          f"its recording ({rec_duration:.2f} s)")
    line: Line = {"id": uid, "audio": str(path.resolve()), "duration": round(duration, 4)}
    if start > 0 or duration < rec_duration - 1e-3:
        line["offset"] = round(start, 4)
    return line


def _lhotse_cuts(path: Path, root: str | Path | None, bad: BadInputs) -> Iterator[Line]:
    base = Path(root) if root is not None else path.parent
    for where, cut in _jsonl(path, bad):
        try:
            uid = str(cut["id"])
            rec_path, rec_duration = _recording_audio(cut["recording"], base, where)
            sups = sorted(cut.get("supervisions") or [], key=lambda s: float(s["start"]))
            texts = [str(s.get("text") or "").strip() for s in sups]
            text = " ".join(t for t in texts if t)
            if not text:
                raise CtcasrError(f"{where}: cut {uid!r} has no supervision text")
            start = float(cut["start"])
            line = _segment(where, uid, rec_path, rec_duration, start, float(cut["duration"]))
            line["text"] = text
            speakers = {s.get("speaker") for s in sups} - {None}
            if len(speakers) == 1:
                line["speaker"] = speakers.pop()
            yield line
        except (KeyError, TypeError, ValueError) as e:
            bad.skip_or_raise(f"{where}: cut lacks or has a bad {e}")
        except CtcasrError as e:
            bad.skip_or_raise(e)


def _lhotse_supervisions(recs_path: Path, sups_path: Path, root: str | Path | None,
                         bad: BadInputs) -> Iterator[Line]:
    base = Path(root) if root is not None else recs_path.parent
    recordings: dict[str, tuple[str, dict[str, Any]]] = {}
    for where, rec in _jsonl(recs_path, bad):
        rid = str(rec.get("id"))
        if rid in recordings:
            bad.skip_or_raise(f"{where}: duplicate recording id {rid!r} (first at "
                              f"{recordings[rid][0]})")
            continue
        recordings[rid] = (where, rec)
    for where, sup in _jsonl(sups_path, bad):
        try:
            uid, rid = str(sup["id"]), str(sup["recording_id"])
            if rid not in recordings:
                raise CtcasrError(f"{where}: recording {rid!r} is not in {recs_path}")
            rec_where, rec = recordings[rid]
            rec_path, rec_duration = _recording_audio(rec, base, rec_where)
            text = str(sup.get("text") or "").strip()
            if not text:
                raise CtcasrError(f"{where}: supervision {uid!r} has no text")
            line = _segment(where, uid, rec_path, rec_duration, float(sup["start"]),
                            float(sup["duration"]))
            line["text"] = text
            if sup.get("speaker"):
                line["speaker"] = str(sup["speaker"])
            yield line
        except (KeyError, TypeError, ValueError) as e:
            bad.skip_or_raise(f"{where}: supervision lacks or has a bad {e}")
        except CtcasrError as e:
            bad.skip_or_raise(e)


# --------------------------------------------------------------------------- files
def _read_lines(path: Path) -> list[str]:
    """A (gzipped) UTF-8 text file's lines; errors name the file."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return data.decode("utf-8-sig").splitlines()
    except OSError as e:
        raise CtcasrError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise CtcasrError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
