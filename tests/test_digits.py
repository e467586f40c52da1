"""The digits recipe's preparation on a small subset of FSDD (skipped when it is absent)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from conftest import REPO, SHARED_DATA

from ctcasr.data.manifest import read_manifest

FSDD = SHARED_DATA / "fsdd"
pytestmark = pytest.mark.skipif(
    not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD} (shared data absent)"
)
WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


def prepare(out, *args):
    return subprocess.run([sys.executable, REPO / "egs/digits/local/prepare.py", FSDD, out,
                           *args], check=True, capture_output=True, text=True)


def test_prepare_connected_digits_with_an_unseen_speaker(tmp_path):
    prepare(tmp_path, "--speakers", "jackson,lucas", "--test-speakers", "lucas",
            "--train-passes", "1")
    sets = {n: read_manifest(tmp_path / f"{n}.jsonl")
            for n in ("train", "valid", "test", "test_unseen")}
    speakers = {n: {u.extra["speaker"] for u in utts} for n, utts in sets.items()}
    assert speakers["train"] == speakers["valid"] == speakers["test"] == {"jackson"}
    assert speakers["test_unseen"] == {"lucas"}
    digits = {n: sum(len(u.text.split()) for u in utts) for n, utts in sets.items()}
    # FSDD's rule: takes 0-4 test (50 recordings), 5-9 valid, 10-49 train; unseen: all 500
    assert digits == {"train": 400, "valid": 50, "test": 50, "test_unseen": 500}
    for utts in sets.values():
        for u in utts:
            words = u.text.split()
            assert 1 <= len(words) <= 7 and set(words) <= WORDS
            info = sf.info(str(u.audio))
            assert info.samplerate == 8000
            assert u.duration == pytest.approx(info.frames / 8000, abs=1e-3)
            assert u.duration > 0.2 * len(words)
    # deterministic from the seed
    again = tmp_path / "again"
    prepare(again, "--speakers", "jackson,lucas", "--test-speakers", "lucas",
            "--train-passes", "1")
    assert (again / "train.jsonl").read_text() == (tmp_path / "train.jsonl").read_text()


def test_unknown_test_speaker_is_an_error(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as e:
        prepare(tmp_path, "--speakers", "jackson", "--test-speakers", "nobody")
    assert "nobody not in" in e.value.stderr


SPEECHOCEAN = SHARED_DATA / "speechocean762"


@pytest.mark.skipif(not SPEECHOCEAN.is_dir(), reason=f"no speechocean762 at {SPEECHOCEAN}")
def test_speechocean_digit_strings_as_a_test_set_and_as_training_voices(tmp_path):
    prepare(tmp_path, "--speakers", "jackson", "--train-passes", "1", "--speechocean",
            SPEECHOCEAN, "--speechocean-train")
    so_test = read_manifest(tmp_path / "test_speechocean.jsonl")
    train = read_manifest(tmp_path / "train.jsonl")
    extra = [u for u in train if u.extra["speaker"].startswith("so")]
    assert len(so_test) >= 30 and len(extra) >= 60  # 41 and 77 in the shared copy
    for u in so_test + extra:
        assert u.text.split() and set(u.text.split()) <= WORDS and u.audio.is_file()
    # the test speakers are never training speakers
    assert not {u.extra["speaker"] for u in so_test} & {u.extra["speaker"] for u in train}


@pytest.mark.skipif(not SPEECHOCEAN.is_dir(), reason=f"no speechocean762 at {SPEECHOCEAN}")
def test_run_sh_stage_1_with_and_without_the_extra_voices(tmp_path):  # with: the default
    """run.sh parses its options and prepares (a stage-1 run of the real script)."""
    recipe = tmp_path / "egs" / "digits"
    skip = shutil.ignore_patterns("data", "exp", "download")
    shutil.copytree(REPO / "egs/digits", recipe, ignore=skip)
    shutil.copytree(REPO / "egs/common", tmp_path / "egs" / "common")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for extra in ([], ["--speechocean-train", "false"]):
        r = subprocess.run(["bash", recipe / "run.sh", "--corpus", FSDD, "--speechocean",
                            SPEECHOCEAN, "--stop-stage", "1", *extra], capture_output=True,
                           text=True, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        assert "== stage 1: prepare" in r.stdout
    names = sorted(p.name for p in (recipe / "data").iterdir())
    assert names == ["unseen_george", "unseen_george_so"]
