"""The yesno recipe's preparation on the real corpus (skipped when it is absent)."""

import subprocess
import sys

import pytest
import soundfile as sf
from conftest import REPO, SHARED_DATA

from ctcasr.data.manifest import read_manifest

YESNO = SHARED_DATA / "yesno"
pytestmark = pytest.mark.skipif(
    not YESNO.is_dir(), reason=f"yesno corpus not found at {YESNO} (shared data absent)"
)


def test_prepare_splits_and_labels(tmp_path):
    subprocess.run([sys.executable, REPO / "egs/yesno/local/prepare.py", YESNO, tmp_path],
                   check=True, capture_output=True)
    train = read_manifest(tmp_path / "train.jsonl")
    valid = read_manifest(tmp_path / "valid.jsonl")
    test = read_manifest(tmp_path / "test.jsonl")
    files = sorted(p.stem for p in YESNO.glob("*.wav"))
    assert {u.id.split("-")[0] for u in train} <= set(files[:27])
    assert [u.id for u in valid] == files[27:31] and [u.id for u in test] == files[31:]
    assert len(test) == 29 and sum(len(u.text.split()) for u in test) == 232
    for u in valid + test:
        assert u.text.split() == ["yes" if c == "1" else "no" for c in u.id.split("_")]
        assert 4.5 < u.duration < 7.5
    for u in train:  # re-cut WAVs: the file's leading silence, then a span of its words
        stem, a, b = u.id.split("-")
        words = ["yes" if c == "1" else "no" for c in stem.split("_")]
        assert u.text.split() == words[int(a) - 1 : int(b)]
        assert len(u.text.split()) < 8  # whole files are left out (they all start with "no")
        assert u.audio.parent == tmp_path / "wav"
        cut, sr = sf.read(u.audio, dtype="int16")
        orig, _ = sf.read(YESNO / f"{stem}.wav", dtype="int16")
        assert sr == 8000 and abs(len(cut) / sr - u.duration) < 1e-3 and 0.3 < u.duration < 7
        assert (cut[:1000] == orig[:1000]).all()  # the recording's onset is kept
    assert len(train) >= 14 * 24  # 14 per training file whose 8 words were found
    assert {u.text.split()[0] for u in train} == {"yes", "no"}
