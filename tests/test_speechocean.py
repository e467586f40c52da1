"""Issue 16: the speechocean762 recipe's preparation on a subset of the real corpus (skipped
when the shared copy is absent)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, SHARED_DATA

from ctcasr.data.manifest import read_manifest

CORPUS = SHARED_DATA / "speechocean762"
pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"speechocean762 not found at {CORPUS} (shared data absent)")


def test_prepare_splits_by_speaker_with_children_and_adults_in_valid(tmp_path):
    r = subprocess.run([sys.executable, REPO / "egs/speechocean/local/prepare.py", CORPUS,
                        tmp_path, "--subset", "16", "--valid-children", "2",
                        "--valid-adults", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    sets = {name: read_manifest(tmp_path / f"{name}.jsonl") for name in ("train", "valid",
                                                                          "test")}
    speakers = {name: {u.extra["speaker"] for u in utts} for name, utts in sets.items()}
    assert len(speakers["train"]) == 12 and len(speakers["valid"]) == 4
    assert len(speakers["test"]) == 16
    assert not speakers["train"] & speakers["valid"] and not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]
    ages = {u.extra["speaker"]: u.extra["age"] for u in sets["valid"]}
    assert sorted(a <= 12 for a in ages.values()) == [False, False, True, True]
    for utts in sets.values():
        for u in utts:
            assert u.text == u.text.lower() and u.text.strip() and u.audio.is_file()
            assert u.extra["speaker"] in u.id and 0.5 < u.duration < 30
    # the LM and the tokenizer see the training transcripts, nothing else
    text = (tmp_path / "text_train.txt").read_text().splitlines()
    assert text == [u.text for u in sets["train"]]
    rows = (tmp_path / "speakers.tsv").read_text().splitlines()
    assert rows[0] == "speaker\tage\tgender\tsplit" and len(rows) == 1 + 12 + 4 + 16
    first = json.loads((tmp_path / "test.jsonl").read_text().splitlines()[0])
    assert set(first) == {"id", "audio", "duration", "text", "speaker", "age", "gender"}


def test_run_sh_refuses_an_unknown_extra_corpus():
    recipe = REPO / "egs/speechocean/run.sh"
    bad = subprocess.run(["bash", recipe, "--extra", "librispeech", "--stage", "8"],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "--extra must be arctic or none, not 'librispeech'" in bad.stderr
    for extra in ("arctic", "none"):  # no stage runs: only the options are checked
        ok = subprocess.run(["bash", recipe, "--extra", extra, "--stage", "8"],
                            capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
