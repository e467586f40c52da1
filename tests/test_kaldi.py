"""Issue 16, part 1: Kaldi data dirs -> manifests (``ctcasr import-kaldi``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ctcasr.data.badinputs import BadInputs
from ctcasr.data.kaldi import import_kaldi_dir, read_map
from ctcasr.data.manifest import read_manifest
from ctcasr.errors import CtcasrError

SR = 8000


def kaldi_dir(tmp_path: Path, files: dict[str, str], wavs: dict[str, float]) -> Path:
    """``data/train`` with ``files`` written in it; ``wavs`` (relative to tmp_path: seconds)."""
    for name, seconds in wavs.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / name, np.zeros(int(seconds * SR), np.float32), SR)
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    for name, content in files.items():
        (d / name).write_text(content)
    return d


def ctcasr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctcasr", *map(str, args)],
                          capture_output=True, text=True)


def test_a_data_dir_with_speakers_becomes_a_manifest(tmp_path):
    d = kaldi_dir(tmp_path, {
        "text": "u2 HELLO WORLD\nu1\tIT'S  ME\n",
        "wav.scp": "u1 wav/a.wav\nu2 wav/b.wav\n",
        "utt2spk": "u1 s1\nu2 s2\n",
    }, {"data/wav/a.wav": 1.5, "data/wav/b.wav": 0.25})
    lines = list(import_kaldi_dir(d))  # relative paths: from the data dir's parent (data/)
    assert lines == [
        {"id": "u2", "audio": str(tmp_path / "data/wav/b.wav"), "duration": 0.25,
         "text": "HELLO WORLD", "speaker": "s2"},
        {"id": "u1", "audio": str(tmp_path / "data/wav/a.wav"), "duration": 1.5,
         "text": "IT'S  ME", "speaker": "s1"},
    ]
    r = ctcasr("import-kaldi", d, "-o", tmp_path / "m.jsonl")
    assert r.returncode == 0 and "2 utterances" in r.stdout, r.stderr
    utts = read_manifest(tmp_path / "m.jsonl")
    assert [u.extra["speaker"] for u in utts] == ["s2", "s1"] and utts[0].duration == 0.25


def test_segments_give_offsets_into_the_recordings(tmp_path):
    d = kaldi_dir(tmp_path, {
        "text": "s-1 ONE\ns-2 TWO THREE\n",
        "wav.scp": "rec /ABS\n".replace("/ABS", str(tmp_path / "long.wav")),
        "segments": "s-1 rec 0.5 1.25\ns-2 rec 2 3.5\n",
        "utt2spk": "s-1 spk\ns-2 spk\n",
    }, {"long.wav": 4.0})
    lines = list(import_kaldi_dir(d))
    assert [(x["id"], x["offset"], x["duration"], x["text"]) for x in lines] == \
        [("s-1", 0.5, 0.75, "ONE"), ("s-2", 2.0, 1.5, "TWO THREE")]
    assert {x["audio"] for x in lines} == {str(tmp_path / "long.wav")}
    (d / "segments").write_text("s-1 rec 0.5 1.25\ns-2 rec 3.5 4.5\n")
    with pytest.raises(CtcasrError, match=r"segments:2: segment 3.5-4.5 s is not inside .*long"
                                          r"\.wav \(4\.00 s\)"):
        list(import_kaldi_dir(d))


@pytest.mark.parametrize("files, error", [
    ({"text": "u1 A\nu2 B\n", "wav.scp": "u1 a.wav\n"},
     r"text:2: no audio: 'u2' is not in .*wav\.scp"),
    ({"text": "u1 A\nu2 B\n", "wav.scp": "u1 a.wav\nu2 gone.wav\n"},
     r"wav\.scp:2: .*gone\.wav: audio file not found \(relative paths resolve against .*; see "
     r"--root\)"),
    ({"text": "u1 A\nu1 B\n", "wav.scp": "u1 a.wav\n"},
     r"text:2: duplicate id 'u1' \(first at line 1\)"),
    ({"text": "u1 A\n", "wav.scp": "u1 a.wav\nu1 a.wav\n"},
     r"wav\.scp:2: duplicate id 'u1' \(first at line 1\)"),
    ({"text": "u1 A\n", "wav.scp": "u1 sox a.flac -t wav - |\n"},
     r"wav\.scp:1: pipe commands are not supported \('sox a.flac -t wav - \|'\)"),
    ({"text": "u1 A\n", "wav.scp": "u1 a.wav\n", "segments": "u1 u1 0.0\n"},
     r"segments:1: expected 4 fields"),
])
def test_bad_lines_are_one_error_naming_file_and_line(tmp_path, files, error):
    d = kaldi_dir(tmp_path, files, {"data/a.wav": 1.0})
    with pytest.raises(CtcasrError, match=error):
        list(import_kaldi_dir(d))
    r = ctcasr("import-kaldi", d, "-o", tmp_path / "m.jsonl")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr


def test_skip_bad_leaves_bad_lines_out_and_counts_them(tmp_path):
    d = kaldi_dir(tmp_path, {
        "text": "u1 A\nu2 B\nu3 C\nu3 D\n",
        "wav.scp": "u1 a.wav\nu3 a.wav\n",
    }, {"data/a.wav": 1.0})
    bad = BadInputs(skip=True)
    assert [x["id"] for x in import_kaldi_dir(d, bad=bad)] == ["u1", "u3"]
    assert bad.count == 2 and "duplicate id 'u3'" in bad.messages[0] and \
        "'u2' is not in" in bad.messages[1]
    r = ctcasr("import-kaldi", d, "-o", tmp_path / "m.jsonl", "--skip-bad")
    assert r.returncode == 0 and "2 utterances, 2 bad line(s) skipped" in r.stdout
    assert [json.loads(x)["id"] for x in (tmp_path / "m.jsonl").read_text().splitlines()] == \
        ["u1", "u3"]


def test_read_map_of_a_two_column_table(tmp_path):
    (tmp_path / "spk2age").write_text("0001 6\n0002\t31\n\n")
    assert read_map(tmp_path / "spk2age") == {"0001": "6", "0002": "31"}
    (tmp_path / "spk2age").write_text("0001 6\n0001 7\n")
    with pytest.raises(CtcasrError, match=r"spk2age:2: duplicate id '0001'"):
        read_map(tmp_path / "spk2age")
