"""Hugging Face ``datasets`` on disk -> manifest lines (``ctcasr import hf SRC``).

Read with ``pyarrow`` alone (the ``hf`` extra), not with ``datasets``: recent ``datasets``
releases need torchcodec (FFmpeg) even to touch an ``Audio`` column, and nothing here needs
more than the table. ``SRC`` is one of

- a folder written by ``Dataset.save_to_disk`` (``state.json`` + ``data-*.arrow``), or by
  ``DatasetDict.save_to_disk`` (``dataset_dict.json`` + one folder per split; ``--split``);
- parquet files: one file, or a folder of them as the Hub keeps them
  (``data/SPLIT-00000-of-00002.parquet``, or ``SPLIT/0000.parquet``; ``--split`` picks);
- one ``.arrow`` file (its ``dataset_info.json`` beside it, if any).

Columns: the audio column is the feature of type ``Audio`` (else ``audio``); it holds
``{"bytes", "path"}``. Audio given as bytes (the usual case on the Hub) is written once, as the
bytes it is (FLAC stays FLAC, MP3 stays MP3: nothing is re-encoded), to ``audio_dir``, one file
per row, and read from there like any corpus; audio given as a path is used where it is
(relative paths start at ``root``, default the dataset's folder). The text column is the first
of :data:`TEXT_COLUMNS` (or ``text_column``), the id the first of :data:`ID_COLUMNS` (else the
split and row number), the speaker the first of :data:`SPEAKER_COLUMNS`. Durations come from
the audio headers; texts are normalised by ``norm`` (:mod:`ctcasr.data.text`). A bad row (no
audio, undecodable bytes, an empty text, a repeated id) is one error naming the file and row, or
skipped under ``--skip-bad``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import soundfile as sf

from ctcasr.data.audio import audio_duration
from ctcasr.data.badinputs import BadInputs
from ctcasr.data.text import normalise
from ctcasr.errors import CtcasrError

TEXT_COLUMNS = ("text", "sentence", "transcript", "transcription", "normalized_text",
                "raw_text")
ID_COLUMNS = ("id", "utt_id", "key", "segment_id", "audio_id")
SPEAKER_COLUMNS = ("speaker_id", "speaker", "client_id")
EXTENSIONS = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3"}
_SHARD = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}$")


def hf_dataset(src: Path, split: str | None, audio_dir: Path, root: str | Path | None = None,
               bad: BadInputs | None = None, norm: Callable[[str], str] = normalise,
               text_column: str | None = None) -> Iterator[dict[str, Any]]:
    """Manifest lines of the dataset at ``src`` (see the module's docstring)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise CtcasrError("importing Hugging Face datasets needs pyarrow: pip install "
                          "-e '.[hf]' (from a checkout)") from None
    bad = BadInputs() if bad is None else bad
    files, features = _locate(src, split)
    base = Path(root) if root is not None else (src if src.is_dir() else src.parent)
    audio_col = next((k for k, v in features.items()
                      if isinstance(v, dict) and v.get("_type") == "Audio"), "audio")
    seen: set[str] = set()
    n = 0  # rows so far: ids made up from row numbers run on across shards
    for path in files:
        names, rows = _open(path)
        columns = _columns(names, audio_col, text_column, path)
        for row_no, row in enumerate(rows):
            where, n = f"{path} row {row_no}", n + 1
            try:
                line = _line(row, columns, where, f"{split or 'row'}-{n - 1:07d}", base,
                             audio_dir, norm, seen)
                seen.add(line["id"])
                yield line
            except CtcasrError as e:
                bad.skip_or_raise(e)


def _locate(src: Path, split: str | None) -> tuple[list[Path], dict[str, Any]]:
    """The data files to read, in order, and the dataset's features (``{}`` if not given)."""
    if src.is_file():
        if src.suffix not in (".arrow", ".parquet"):
            raise CtcasrError(f"{src}: not a .arrow or .parquet file")
        return [src], _features(src)
    if (src / "dataset_dict.json").is_file():
        splits = _json(src / "dataset_dict.json").get("splits", [])
        split = split or "train"
        if split not in splits:
            raise CtcasrError(f"{src}: no split {split!r} (it has {', '.join(splits)}): "
                              "choose one with --split")
        src = src / split
    if (src / "state.json").is_file():
        state = _json(src / "state.json")
        try:
            files = [src / f["filename"] for f in state["_data_files"]]
        except (KeyError, TypeError):
            raise CtcasrError(f"{src / 'state.json'}: no _data_files list: not written by "
                              "datasets' save_to_disk") from None
        return files, _features(files[0]) if files else {}
    parquet = sorted(src.rglob("*.parquet"))
    if not parquet:
        raise CtcasrError(f"{src}: no dataset here (state.json, dataset_dict.json or "
                          "*.parquet files)")
    by_split: dict[str, list[Path]] = {}
    for p in parquet:
        m = _SHARD.match(p.stem)
        by_split.setdefault(m["split"] if m else p.parent.name, []).append(p)
    if split is None and len(by_split) > 1:
        raise CtcasrError(f"{src}: parquet files of several splits ({', '.join(by_split)}): "
                          "choose one with --split")
    split = split or next(iter(by_split))
    if split not in by_split:
        raise CtcasrError(f"{src}: no parquet files of split {split!r} (it has "
                          f"{', '.join(by_split)})")
    return by_split[split], _features(by_split[split][0])


def _features(path: Path) -> dict[str, Any]:
    """The ``features`` of ``dataset_info.json`` beside an arrow file, or of a parquet file's
    ``huggingface`` metadata."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        info = json.loads(meta.get(b"huggingface", b"{}")).get("info", {})
    else:
        info_file = path.parent / "dataset_info.json"
        info = _json(info_file) if info_file.is_file() else {}
    return info.get("features") or {}


def _open(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """The column names and rows of an arrow (stream or file format) or parquet file, read a
    record batch at a time (a dataset's audio never is in memory all at once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".parquet":
            pf = pq.ParquetFile(path)
            return pf.schema_arrow.names, _unbatch(pf.iter_batches(batch_size=256), path)
        source = pa.memory_map(str(path))
        try:
            stream = pa.ipc.open_stream(source)
            return stream.schema.names, _unbatch(stream, path)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            return reader.schema.names, _unbatch(batches, path)
    except (OSError, pa.ArrowException) as e:
        raise CtcasrError(f"{path}: cannot read it as {path.suffix[1:]}: {e}") from None


def _unbatch(batches: Any, path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow as pa

    try:
        for batch in batches:
            yield from batch.to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise CtcasrError(f"{path}: cannot read it as {path.suffix[1:]}: {e}") from None


def _columns(names: list[str], audio: str, text: str | None, path: Path) -> dict[str, str]:
    text = text or next((c for c in TEXT_COLUMNS if c in names), None)
    if audio not in names or text not in names:
        what = "audio" if audio not in names else (
            f"text ({text!r})" if text else f"text (one of {', '.join(TEXT_COLUMNS)})")
        raise CtcasrError(f"{path}: no {what} column (columns: {', '.join(names)})"
                          + ("" if audio not in names else "; name it with --text-column"))
    cols = {"audio": audio, "text": text}
    for key, choices in (("id", ID_COLUMNS), ("speaker", SPEAKER_COLUMNS)):
        found = next((c for c in choices if c in names), None)
        if found:
            cols[key] = found
    return cols


def _line(row: dict[str, Any], cols: dict[str, str], where: str, default_id: str, base: Path,
          audio_dir: Path, norm: Callable[[str], str], seen: set[str]) -> dict[str, Any]:
    raw = row[cols["text"]]
    text = norm(raw) if isinstance(raw, str) else ""
    if not text:
        raise CtcasrError(f"{where}: empty text ({cols['text']!r} is {raw!r})")
    uid = str(row[cols["id"]]) if row.get(cols.get("id", "")) not in (None, "") else default_id
    if uid in seen:
        raise CtcasrError(f"{where}: id {uid!r} is repeated")
    audio, duration = _audio(row[cols["audio"]], uid, where, base, audio_dir)
    line: dict[str, Any] = {"id": uid, "audio": str(audio.resolve()),
                            "duration": round(duration, 4), "text": text}
    if "speaker" in cols and row[cols["speaker"]] not in (None, ""):
        line["speaker"] = str(row[cols["speaker"]])
    return line


def _audio(value: Any, uid: str, where: str, base: Path, audio_dir: Path) -> tuple[Path, float]:
    """The file that holds a row's audio (written from its bytes if need be) and its duration."""
    data, path = (value.get("bytes"), value.get("path")) if isinstance(value, dict) \
        else (None, value)
    if data:
        try:
            info = sf.info(io.BytesIO(data))
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
            raise CtcasrError(f"{where}: its audio bytes are not audio soundfile reads "
                              f"({str(e).splitlines()[0]})") from None
        # the id names the file, made safe (nothing in the dataset becomes a path as it is) and
        # told apart from ids that make the same safe name by a digest of the id
        safe = re.sub(r"[^\w.-]", "_", uid)
        if safe != uid:
            safe += "-" + hashlib.sha1(uid.encode()).hexdigest()[:8]
        out = audio_dir / (safe + EXTENSIONS.get(info.format, ".audio"))
        if not (out.is_file() and out.stat().st_size == len(data)):
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
        return out, info.frames / info.samplerate
    if isinstance(path, str) and path:
        file = Path(path) if Path(path).is_absolute() else base / path
        return file, audio_duration(file, where)
    raise CtcasrError(f"{where}: no audio (neither bytes nor a path)")


def _json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CtcasrError(f"{path}: cannot read it as JSON: {e}") from None
    if not isinstance(obj, dict):
        raise CtcasrError(f"{path}: expected a JSON object")
    return obj
