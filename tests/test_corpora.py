"""Issue 38: corpora in their own layouts -> manifests (``ctcasr import FORMAT SRC``).

Each test fabricates a tree in the corpus's layout, with the odd cases the real ones have
(LibriSpeech's upper-case transcripts, Common Voice's quotes and empty fields, MP3 clips and a
duration table, lhotse cuts that are part of a recording, gzipped manifests), and checks the
manifest lines; bad rows give one error naming file:line, or are skipped and counted. One test
trains and decodes each importer's output through the CLI.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import WORD_HZ, tone

from ctcasr.data.badinputs import BadInputs
from ctcasr.data.corpora import import_corpus
from ctcasr.data.manifest import read_manifest
from ctcasr.data.text import normalise_unicode
from ctcasr.errors import CtcasrError

SR = 8000


def speech(words: list[str], seed: int = 0) -> np.ndarray:
    """The conftest corpus's two pitch "words" (``ab``, ``ba``) with pauses."""
    pause = np.zeros(int(0.1 * SR), np.float32)
    parts = [pause]
    for k, w in enumerate(words):
        parts += [tone(WORD_HZ[w], 0.25, SR, seed=seed * 10 + k), pause]
    return np.concatenate(parts)


def texts(n: int) -> list[list[str]]:
    rng = np.random.default_rng(0)
    return [[("ab", "ba")[j] for j in rng.integers(0, 2, size=1 + i % 3)] for i in range(n)]


# --------------------------------------------------------------------------- trees
def librispeech_tree(root: Path, n: int = 12, split: str = "train-clean-5",
                     first_speaker: int = 19) -> Path:
    split = root / "LibriSpeech" / split
    for i, words in enumerate(texts(n)):
        spk, chap = f"{first_speaker + i % 2}", f"{198 + i % 3}"
        d = split / spk / chap
        d.mkdir(parents=True, exist_ok=True)
        utt = f"{spk}-{chap}-{i:04d}"
        sf.write(d / f"{utt}.flac", speech(words, i), SR)
        with (d / f"{spk}-{chap}.trans.txt").open("a") as f:
            f.write(f"{utt} {' '.join(words).upper()}\n")
    return split


def commonvoice_tree(root: Path, n: int = 12, durations_table: bool = True) -> Path:
    lang = root / "cv-corpus-20.0" / "en"
    (lang / "clips").mkdir(parents=True)
    header = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
              "down_votes", "age", "gender", "accents", "variant", "locale", "segment"]
    rows, table = ["\t".join(header)], ["clip\tduration[ms]"]
    for i, words in enumerate(texts(n)):
        clip = f"common_voice_en_{1000 + i}.mp3"
        wave = speech(words, i)
        sf.write(lang / "clips" / clip, wave, SR, format="MP3")
        sentence = " ".join(words).capitalize() + ("." if i % 2 else '!"')
        if i % 3 == 0:
            sentence = f'"{sentence}'  # quotes, unbalanced, as CV's sentences have them
        rows.append("\t".join([f"spk{i % 4}", clip, f"s{i}", sentence, "", "2", "0",
                               "twenties" if i % 2 else "", "", "", "", "en", ""]))
        table.append(f"{clip}\t{len(wave) * 1000 // SR}")
    (lang / "train.tsv").write_text("\n".join(rows) + "\n")
    if durations_table:
        (lang / "clip_durations.tsv").write_text("\n".join(table) + "\n")
    return lang


def lhotse_tree(root: Path, n: int = 12) -> Path:
    """Two long recordings, each of n/2 utterances; recordings + supervisions + cuts (gz)."""
    d = root / "lhotse"
    (d / "audio").mkdir(parents=True)
    recs, sups, cuts = [], [], []
    all_words = texts(n)
    for r in range(2):
        pieces, t, segs = [], 0.0, []
        for i in range(r * n // 2, (r + 1) * n // 2):
            wave = speech(all_words[i], i)
            segs.append((i, t, len(wave) / SR))
            pieces.append(wave)
            t += len(wave) / SR
        wave = np.concatenate(pieces)
        name = f"rec{r}.wav"
        sf.write(d / "audio" / name, wave, SR)
        rec = {"id": f"rec{r}", "sources": [{"type": "file", "channels": [0],
                                             "source": f"audio/{name}"}],
               "sampling_rate": SR, "num_samples": len(wave), "duration": len(wave) / SR,
               "channel_ids": [0]}
        recs.append(rec)
        for i, start, dur in segs:
            sup = {"id": f"sup{i:02d}", "recording_id": f"rec{r}", "start": start,
                   "duration": dur, "channel": 0, "text": " ".join(all_words[i]),
                   "speaker": f"spk{r}", "language": "x"}
            sups.append(sup)
            cuts.append({"id": f"cut{i:02d}", "start": start, "duration": dur, "channel": 0,
                         "supervisions": [{**sup, "start": 0.0}], "recording": rec,
                         "type": "MonoCut"})
    for name, objs in (("recordings", recs), ("supervisions", sups), ("cuts", cuts)):
        with gzip.open(d / f"x_{name}_train.jsonl.gz", "wt") as f:
            f.writelines(json.dumps(o) + "\n" for o in objs)
    return d


def hf_tree(root: Path, layout: str = "disk", n: int = 12) -> Path:
    """A Hugging Face dataset as ``datasets`` 5.2 writes it (checked against its output), made
    with pyarrow: ``disk`` (``Dataset.save_to_disk``: stream-format arrow, state.json,
    dataset_info.json), ``dict`` (``DatasetDict.save_to_disk``, splits train and test) or
    ``parquet`` (the Hub's ``data/SPLIT-0000K-of-0000N.parquet`` with the ``huggingface``
    schema metadata; train in two shards). Audio as bytes (FLAC, WAV, one MP3) with the
    original file name as ``path``, except row 2: a path relative to the dataset, no bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = root / "hf"
    d.mkdir(parents=True)
    text_col = "transcription" if layout == "parquet" else "text"
    features = {"id": {"dtype": "string", "_type": "Value"},
                "audio": {"sampling_rate": SR, "_type": "Audio"},
                text_col: {"dtype": "string", "_type": "Value"},
                "speaker_id": {"dtype": "int64", "_type": "Value"}}
    rows = []
    for i, words in enumerate(texts(n)):
        fmt = "MP3" if i == 5 else ("WAV" if i % 2 else "FLAC")
        buf = io.BytesIO()
        sf.write(buf, speech(words, i), SR, format=fmt)
        audio = {"bytes": buf.getvalue(), "path": f"clip{i}.{fmt.lower()}"}
        if i == 2:
            sf.write(d / "clip2.flac", speech(words, i), SR)
            audio = {"bytes": None, "path": "clip2.flac"}
        rows.append({"id": f"utt/{i:02d}" if i == 3 else f"utt{i:02d}", "audio": audio,
                     text_col: " ".join(words).upper() + "!", "speaker_id": i % 3})
    schema = pa.schema([("id", pa.string()),
                        ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        (text_col, pa.string()), ("speaker_id", pa.int64())],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})

    def table(part):
        return pa.Table.from_pylist(part, schema=schema)

    def save_to_disk(folder: Path, part) -> None:
        folder.mkdir(exist_ok=True)
        with pa.ipc.new_stream(folder / "data-00000-of-00001.arrow", schema) as w:
            w.write_table(table(part), max_chunksize=5)
        (folder / "state.json").write_text(json.dumps(
            {"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": None}))
        (folder / "dataset_info.json").write_text(json.dumps({"features": features}))

    if layout == "disk":
        save_to_disk(d, rows)
    elif layout == "dict":
        (d / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
        save_to_disk(d / "train", rows)
        save_to_disk(d / "test", rows[:2])
    else:
        (d / "data").mkdir()
        pq.write_table(table(rows[:n // 2]), d / "data" / "train-00000-of-00002.parquet")
        pq.write_table(table(rows[n // 2:]), d / "data" / "train-00001-of-00002.parquet")
        pq.write_table(table(rows[:2]), d / "data" / "test-00000-of-00001.parquet")
    return d


# --------------------------------------------------------------------------- text
@pytest.mark.parametrize("raw, expected", [
    ("Ça va? «Très» bien—merci!", "ça va très bien merci"),
    ("L\u2019homme d'affaires' chose", "l'homme d'affaires chose"),
    ("Straße 12, KÖLN", "straße 12 köln"),
    ("你好，世界。", "你好 世界"),
    ("Привет, мир!", "привет мир"),
    ("'quoted' rock 'n' roll_x a-b", "quoted rock n roll x a b"),
    ("नमस्ते दुनिया।", "नमस्ते दुनिया"),  # vowel signs are marks: kept
    ("e\u0301te\u0301", "\u00e9t\u00e9"),  # NFC: one code point per letter
])
def test_normalise_unicode(raw, expected):
    assert normalise_unicode(raw) == expected


# --------------------------------------------------------------------------- LibriSpeech
def test_librispeech(tmp_path):
    split = librispeech_tree(tmp_path)
    lines = list(import_corpus("librispeech", split.parent, split="train-clean-5"))
    assert len(lines) == 12
    first = min(lines, key=lambda x: x["id"])
    assert first["id"] == "19-198-0000" and first["speaker"] == "19" and first["chapter"] == "198"
    assert first["text"] == " ".join(texts(1)[0])  # upper case in, normalised out
    assert first["duration"] == pytest.approx(len(speech(texts(1)[0])) / SR, abs=1e-3)
    assert {x["speaker"] for x in lines} == {"19", "20"}
    (split / "19" / "198" / "19-198-0000.flac").unlink()
    with pytest.raises(CtcasrError, match=r"19-198\.trans\.txt:1: .*19-198-0000\.flac: audio "
                                          "file not found"):
        list(import_corpus("librispeech", split))
    bad = BadInputs(skip=True)
    assert len(list(import_corpus("librispeech", split, bad=bad))) == 11 and bad.count == 1
    with pytest.raises(CtcasrError, match="not a LibriSpeech split"):
        list(import_corpus("librispeech", split.parent))


# --------------------------------------------------------------------------- Common Voice
@pytest.mark.parametrize("durations_table", [True, False])
def test_commonvoice(tmp_path, durations_table):
    lang = commonvoice_tree(tmp_path, durations_table=durations_table)
    lines = list(import_corpus("commonvoice", lang, split="train"))
    assert [x["text"] for x in lines] == [" ".join(w) for w in texts(12)]  # quotes, case gone
    assert lines[0]["id"] == "common_voice_en_1000" and lines[0]["speaker"] == "spk0"
    assert "age" not in lines[0] and lines[1]["age"] == "twenties"  # empty fields left out
    for x, words in zip(lines, texts(12), strict=True):  # MP3 headers or the ms table
        assert x["duration"] == pytest.approx(len(speech(words)) / SR, abs=2e-3)
    kept = list(import_corpus("commonvoice", lang, text_norm="none"))
    assert kept[0]["text"] == '"' + " ".join(texts(1)[0]).capitalize() + '!"'


def test_commonvoice_errors(tmp_path):
    lang = commonvoice_tree(tmp_path, n=4)
    with pytest.raises(CtcasrError, match=r"dev\.tsv: not found \(the split tables here: "
                                          r"clip_durations, train\)"):
        list(import_corpus("commonvoice", lang, split="dev"))
    rows = (lang / "train.tsv").read_text().splitlines()
    rows[2] = rows[2].replace("common_voice_en_1001.mp3", "gone.mp3")
    rows[3] = "\t".join(rows[3].split("\t")[:5])
    (lang / "train.tsv").write_text("\n".join(rows) + "\n")
    with pytest.raises(CtcasrError, match=r"train\.tsv:3: audio file not found: .*gone\.mp3"):
        list(import_corpus("commonvoice", lang))
    bad = BadInputs(skip=True)
    assert [x["id"] for x in import_corpus("commonvoice", lang, bad=bad)] == \
        ["common_voice_en_1000", "common_voice_en_1003"]
    assert bad.count == 2 and "train.tsv:4: expected 13 tab-separated fields" in bad.messages[1]
    (lang / "train.tsv").write_text("client_id\tpath\n")
    with pytest.raises(CtcasrError, match=r"train\.tsv:1: no column sentence in the header"):
        list(import_corpus("commonvoice", lang))


# --------------------------------------------------------------------------- lhotse
def test_lhotse_cuts_and_supervisions(tmp_path):
    d = lhotse_tree(tmp_path)
    from_cuts = list(import_corpus("lhotse", d / "x_cuts_train.jsonl.gz"))
    from_sups = list(import_corpus("lhotse", d / "x_supervisions_train.jsonl.gz"))
    assert [x["text"] for x in from_cuts] == [x["text"] for x in from_sups] == \
        [" ".join(w) for w in texts(12)]
    for c, s in zip(from_cuts, from_sups, strict=True):
        assert (c["audio"], c.get("offset"), c["duration"], c["speaker"]) == \
            (s["audio"], s.get("offset"), s["duration"], s["speaker"])
    assert "offset" not in from_cuts[0] or from_cuts[0]["offset"] == 0
    assert from_cuts[1]["offset"] == pytest.approx(len(speech(texts(1)[0])) / SR, abs=1e-4)
    # the folder: cuts are preferred; the audio a segment points at is the recording's
    assert [x["id"] for x in import_corpus("lhotse", d)] == [x["id"] for x in from_cuts]
    assert from_cuts[7]["audio"] == str((d / "audio" / "rec1.wav").resolve())


def test_lhotse_errors(tmp_path):
    d = lhotse_tree(tmp_path, n=4)
    cuts = [json.loads(x) for x in gzip.open(d / "x_cuts_train.jsonl.gz", "rt")]
    cuts[1]["recording"]["sources"][0] = {"type": "url", "channels": [0], "source": "http://x"}
    cuts[2]["duration"] = 99.0
    path = d / "cuts.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cuts) + "{not json\n")
    with pytest.raises(CtcasrError, match=r"cuts\.jsonl:2: recording 'rec0' has sources of "
                                          r"type url .* only one audio file"):
        list(import_corpus("lhotse", path))
    bad = BadInputs(skip=True)
    assert [x["id"] for x in import_corpus("lhotse", path, bad=bad)] == ["cut00", "cut03"]
    assert bad.count == 3 and "cuts.jsonl:3: 'cut02' spans" in bad.messages[1]
    assert "cuts.jsonl:5: not JSON" in bad.messages[2]


# --------------------------------------------------------------------------- Hugging Face
@pytest.mark.parametrize("layout", ["disk", "dict", "parquet"])
def test_hf(tmp_path, layout):
    d = hf_tree(tmp_path, layout)
    src, root = (d, None) if layout != "parquet" else (d, d)
    out = tmp_path / "audio"
    lines = list(import_corpus("hf", src, split="train" if layout != "disk" else None,
                               audio_dir=out, root=root))
    assert [x["id"] for x in lines] == [f"utt/{i:02d}" if i == 3 else f"utt{i:02d}"
                                        for i in range(12)]  # shards in order
    assert [x["text"] for x in lines] == [" ".join(w) for w in texts(12)]  # normalised
    assert [x["speaker"] for x in lines] == [str(i % 3) for i in range(12)]
    for i, (x, words) in enumerate(zip(lines, texts(12), strict=True)):
        assert x["duration"] == pytest.approx(len(speech(words)) / SR, abs=2e-3 if i == 5
                                              else 1e-4)
        data, _ = sf.read(x["audio"], dtype="float32")  # the file reads as the row's audio
        assert np.abs(data - speech(words, i)).max() < (0.05 if i == 5 else 1e-3)
    # bytes written as they are (FLAC stays FLAC, MP3 MP3); the path row used where it is
    assert Path(lines[0]["audio"]) == (out / "utt00.flac").resolve()
    assert Path(lines[1]["audio"]).name == "utt01.wav"
    assert Path(lines[5]["audio"]).name == "utt05.mp3"
    assert Path(lines[2]["audio"]).parent != out.resolve()
    assert Path(lines[3]["audio"]).parent == out.resolve()  # "utt/03": no folder made
    assert Path(lines[3]["audio"]).name.startswith("utt_03-")
    assert len(list(out.iterdir())) == 11
    kept = list(import_corpus("hf", src, split="train", audio_dir=out, root=root,
                              text_norm="none"))
    assert kept[0]["text"] == " ".join(texts(1)[0]).upper() + "!"
    if layout != "disk":
        assert len(list(import_corpus("hf", src, split="test", audio_dir=out))) == 2


def test_hf_errors(tmp_path):
    import pyarrow as pa

    d = hf_tree(tmp_path, "parquet")
    with pytest.raises(CtcasrError, match=r"parquet files of several splits \(test, train\): "
                                          "choose one with --split"):
        list(import_corpus("hf", d, audio_dir=tmp_path / "a"))
    with pytest.raises(CtcasrError, match=r"no parquet files of split 'dev' \(it has test, "
                                          r"train\)"):
        list(import_corpus("hf", d, split="dev", audio_dir=tmp_path / "a"))
    d = hf_tree(tmp_path / "x", "disk", n=5)
    with pytest.raises(CtcasrError, match=r"no text \('words'\) column \(columns: id, audio, "
                                          r"text, speaker_id\); name it with --text-column"):
        list(import_corpus("hf", d, audio_dir=tmp_path / "a", text_column="words"))
    arrow = d / "data-00000-of-00001.arrow"
    with pa.ipc.open_stream(arrow) as r:
        rows, schema = r.read_all().to_pylist(), r.schema
    rows[1]["audio"] = {"bytes": b"not audio at all", "path": "x.wav"}
    rows[2]["text"] = " "
    rows[3]["id"] = "utt00"
    rows[4]["audio"] = {"bytes": None, "path": None}
    with pa.ipc.new_stream(arrow, schema) as w:
        w.write_table(pa.Table.from_pylist(rows, schema=schema))
    with pytest.raises(CtcasrError, match=r"arrow row 1: its audio bytes are not audio"):
        list(import_corpus("hf", d, audio_dir=tmp_path / "a"))
    bad = BadInputs(skip=True)
    assert [x["id"] for x in import_corpus("hf", d, audio_dir=tmp_path / "a", bad=bad)] == \
        ["utt00"]
    assert [m.split(": ", 1)[1][:22] for m in bad.messages] == [
        "its audio bytes are no", "empty text ('text' is ", "id 'utt00' is repeated",
        "no audio (neither byte"]
    assert all(f"{arrow} row {i}: " in m for i, m in zip([1, 2, 3, 4], bad.messages, strict=True))
    (d / "state.json").unlink()
    with pytest.raises(CtcasrError, match=r"no dataset here \(state\.json, dataset_dict"):
        list(import_corpus("hf", d, audio_dir=tmp_path / "a"))


# --------------------------------------------------------------------------- the CLI
def ctcasr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctcasr", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("fmt, make, src", [
    ("librispeech", librispeech_tree, lambda p: p),
    ("commonvoice", commonvoice_tree, lambda p: p),
    ("lhotse", lhotse_tree, lambda p: p / "x_cuts_train.jsonl.gz"),
    ("hf", hf_tree, lambda p: p),
])
def test_import_trains_and_decodes(fmt, make, src, tiny_config, tmp_path):
    m = tmp_path / "m.jsonl"
    r = ctcasr("import", fmt, src(make(tmp_path)), "-o", m)
    assert r.returncode == 0 and "wrote" in r.stdout and "12 utterances" in r.stdout, r.stderr
    assert len(read_manifest(m)) == 12
    exp = tmp_path / "exp"
    r = ctcasr("train", "-c", tiny_config, "--train", m, "--valid", m, "--exp-dir", exp,
               "--set", "train.epochs=1")
    assert r.returncode == 0, r.stderr
    r = ctcasr("decode", "--checkpoint", exp / "model.pt", "--manifest", m, "--out-dir",
               tmp_path / "dec")
    assert r.returncode == 0 and "WER" in r.stdout, r.stderr
    assert len((tmp_path / "dec" / "hyp.txt").read_text().splitlines()) == 12


def test_import_cli_errors(tmp_path):
    r = ctcasr("import", "tfds", tmp_path, "-o", tmp_path / "m.jsonl")
    assert r.returncode == 1 and "unknown corpus format 'tfds'" in r.stderr
    r = ctcasr("import", "librispeech", tmp_path / "nope", "-o", tmp_path / "m.jsonl")
    assert r.returncode == 1 and r.stderr.strip() == f"error: {tmp_path}/nope: no such file " \
        "or folder"
