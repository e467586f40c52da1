"""Issue 38: corpora in their own layouts -> manifests (``ctcasr import FORMAT SRC``).

Each test fabricates a tree in the corpus's layout, with the odd cases the real ones have
(LibriSpeech's upper-case transcripts, Common Voice's quotes and empty fields, MP3 clips and a
duration table, lhotse cuts that are part of a recording, gzipped manifests), and checks the
manifest lines; bad rows give one error naming file:line, or are skipped and counted. One test
trains and decodes each importer's output through the CLI.
"""

from __future__ import annotations

import gzip
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
def librispeech_tree(root: Path, n: int = 12) -> Path:
    split = root / "LibriSpeech" / "train-clean-5"
    for i, words in enumerate(texts(n)):
        spk, chap = f"{19 + i % 2}", f"{198 + i % 3}"
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
    kept = list(import_corpus("commonvoice", lang, normalise_text=False))
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


# --------------------------------------------------------------------------- the CLI
def ctcasr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctcasr", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("fmt, make, src", [
    ("librispeech", librispeech_tree, lambda p: p),
    ("commonvoice", commonvoice_tree, lambda p: p),
    ("lhotse", lhotse_tree, lambda p: p / "x_cuts_train.jsonl.gz"),
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
