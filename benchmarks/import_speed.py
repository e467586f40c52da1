"""How long ``ctcasr import`` takes on a fabricated corpus of each layout.

    .venv/bin/python benchmarks/import_speed.py [--utts 10000] [--formats librispeech ...]

Each format gets a tree of ``--utts`` utterances of 0.5-2 s of noise at 16 kHz in its own
layout (LibriSpeech: FLAC in 50 speakers x 4 chapters with their ``.trans.txt``; Common Voice: MP3
clips and ``train.tsv``, with and without ``clip_durations.tsv``; lhotse: a gzipped cut set over
100 long recordings; Kaldi: WAVs, ``wav.scp``, ``text``, ``utt2spk``; hf: the Hub's parquet
shards with FLAC bytes, imported with the audio folder removed first, then again), made once
in a temporary folder (not timed), then imported into a manifest (timed, the fastest of
``--repeats``; the file cache is warm after the first pass, as it is on a machine that just
unpacked the corpus).
Prints one table: utterances, seconds, utterances per second.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from ctcasr.data.corpora import import_corpus
from ctcasr.data.manifest import write_manifest

SR = 16000


def _noise(rng: np.random.Generator) -> np.ndarray:
    return (0.05 * rng.standard_normal(int(SR * rng.uniform(0.5, 2.0)))).astype(np.float32)


def librispeech(root: Path, n: int, rng: np.random.Generator) -> Path:
    split = root / "train-fake"
    for i in range(n):
        spk, chap = 100 + i % 50, 10 + (i // 50) % 4
        d = split / str(spk) / str(chap)
        d.mkdir(parents=True, exist_ok=True)
        utt = f"{spk}-{chap}-{i:06d}"
        sf.write(d / f"{utt}.flac", _noise(rng), SR)
        with (d / f"{spk}-{chap}.trans.txt").open("a") as f:
            f.write(f"{utt} SOME WORDS NUMBER {i}\n")
    return split


def commonvoice(root: Path, n: int, rng: np.random.Generator) -> Path:
    lang = root / "en"
    (lang / "clips").mkdir(parents=True)
    rows = ["client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale"
            "\tsegment"]
    table = ["clip\tduration[ms]"]
    for i in range(n):
        clip = f"common_voice_en_{i}.mp3"
        wave = _noise(rng)
        sf.write(lang / "clips" / clip, wave, SR, format="MP3")
        rows.append(f"spk{i % 300}\t{clip}\t\"Some\" words, number {i}.\t2\t0\t\t\t\ten\t")
        table.append(f"{clip}\t{len(wave) * 1000 // SR}")
    (lang / "train.tsv").write_text("\n".join(rows) + "\n")
    (lang / "durations.tsv").write_text("\n".join(table) + "\n")  # renamed in when timed
    return lang


def lhotse(root: Path, n: int, rng: np.random.Generator) -> Path:
    d = root / "lhotse"
    d.mkdir(parents=True)
    per = n // 100
    with gzip.open(d / "cuts.jsonl.gz", "wt") as f:
        for r in range(100):
            waves = [_noise(rng) for _ in range(per)]
            name = d / f"rec{r}.flac"
            sf.write(name, np.concatenate(waves), SR)
            total = sum(len(w) for w in waves) / SR
            rec = {"id": f"rec{r}", "sources": [{"type": "file", "channels": [0],
                                                 "source": name.name}],
                   "sampling_rate": SR, "num_samples": int(total * SR), "duration": total}
            t = 0.0
            for k, w in enumerate(waves):
                dur = len(w) / SR
                sup = {"id": f"s{r}-{k}", "recording_id": f"rec{r}", "start": 0.0,
                       "duration": dur, "text": f"some words {k}", "speaker": f"spk{r}"}
                f.write(json.dumps({"id": f"c{r}-{k}", "start": t, "duration": dur,
                                    "channel": 0, "supervisions": [sup], "recording": rec,
                                    "type": "MonoCut"}) + "\n")
                t += dur
    return d / "cuts.jsonl.gz"


def kaldi(root: Path, n: int, rng: np.random.Generator) -> Path:
    d = root / "kaldi" / "train"
    (d.parent / "wav").mkdir(parents=True)
    scp, text, spk = [], [], []
    for i in range(n):
        name = d.parent / "wav" / f"u{i:06d}.wav"
        sf.write(name, _noise(rng), SR)
        scp.append(f"u{i:06d} wav/{name.name}")
        text.append(f"u{i:06d} SOME WORDS {i}")
        spk.append(f"u{i:06d} s{i % 100}")
    d.mkdir(parents=True)
    for fname, lines in (("wav.scp", scp), ("text", text), ("utt2spk", spk)):
        (d / fname).write_text("\n".join(lines) + "\n")
    return d


def hf(root: Path, n: int, rng: np.random.Generator) -> Path:
    """The Hub's parquet layout, FLAC bytes in the rows, shards of 1,000 rows."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    d = root / "hf" / "data"
    d.mkdir(parents=True)
    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("id", pa.string()), ("audio", audio), ("text", pa.string())])
    shards = (n + 999) // 1000
    for k in range(shards):
        rows = []
        for i in range(k * 1000, min(n, (k + 1) * 1000)):
            buf = io.BytesIO()
            sf.write(buf, _noise(rng), SR, format="FLAC")
            rows.append({"id": f"u{i:06d}", "audio": {"bytes": buf.getvalue(), "path": None},
                         "text": f"Some words, number {i}."})
        pq.write_table(pa.Table.from_pylist(rows, schema=schema),
                       d / f"train-{k:05d}-of-{shards:05d}.parquet")
    return d.parent


MAKERS = {"librispeech": librispeech, "commonvoice": commonvoice, "lhotse": lhotse,
          "kaldi": kaldi, "hf": hf}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utts", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--formats", nargs="*", default=list(MAKERS))
    args = ap.parse_args()
    print("| format | utterances | import s | utterances / s |\n| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="ctcasr-import-") as tmp:
        for fmt in args.formats:
            root = Path(tmp) / fmt
            src = MAKERS[fmt](root, args.utts, np.random.default_rng(0))
            cases = [(fmt, src)]
            if fmt == "commonvoice":
                cases = [("commonvoice, MP3 headers", src),
                         ("commonvoice, clip_durations.tsv", src)]
            if fmt == "hf":
                cases = [("hf parquet, FLAC bytes written out", src),
                         ("hf parquet, again (files there)", src)]
            for label, path in cases:
                if label.endswith("clip_durations.tsv"):
                    (path / "durations.tsv").rename(path / "clip_durations.tsv")
                best = float("inf")
                for _ in range(args.repeats):
                    if label.endswith("written out"):
                        shutil.rmtree(root / "audio", ignore_errors=True)
                    start = time.perf_counter()
                    n = write_manifest(root / "m.jsonl",
                                       import_corpus(fmt, path, audio_dir=root / "audio"))
                    best = min(best, time.perf_counter() - start)
                print(f"| {label} | {n} | {best:.2f} | {n / best:.0f} |", flush=True)


if __name__ == "__main__":
    main()
