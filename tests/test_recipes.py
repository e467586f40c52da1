"""The corpus recipes on fabricated corpora in their own layouts, with a tiny model: the real
run.sh, copied out of the repository so nothing is written into it. LibriSpeech's runs end to end
(import, tokenizer, train, average, LM, decode with the LM settings chosen on valid, report)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from test_corpora import commonvoice_tree, librispeech_tree

FAST = ["--average", "1", "--beam", "4", "--lm-weights", "0.5", "--word-bonuses", "0",
        "--unk-penalties", "0", "--train-opts", "train.epochs=1"]


def recipe_copy(tmp_path: Path, name: str) -> Path:
    skip = shutil.ignore_patterns("data", "exp", "download")
    shutil.copytree(REPO / "egs" / name, tmp_path / "egs" / name, ignore=skip)
    shutil.copytree(REPO / "egs" / "common", tmp_path / "egs" / "common")
    return tmp_path / "egs" / name / "run.sh"


def run(script: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", script, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def report_rows(out: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ")]
    return [x for x in rows if x[0] not in ("test set", "---")]


def test_librispeech_mini(tmp_path, tiny_config):
    corpus = tmp_path / "corpus"
    librispeech_tree(corpus, 12, "train-clean-5", first_speaker=19)
    librispeech_tree(corpus, 8, "dev-clean-2", first_speaker=40)  # 2 speakers: valid | test
    r = run(recipe_copy(tmp_path, "librispeech"), "--size", "mini", "--corpus",
            corpus / "LibriSpeech", "--config", tiny_config, *FAST)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = report_rows(r.stdout)
    assert [x[2].split(" (")[0] for x in rows] == ["greedy", "beam", "beam + 3-gram LM"]
    assert all(x[0] == "test" and x[1] == "1 (0)" and x[5] != "0" for x in rows), rows
    data = tmp_path / "egs" / "librispeech" / "data" / "mini"
    assert sorted(p.name for p in data.glob("*.jsonl")) == [
        "dev-clean-2.jsonl", "test.jsonl", "train-clean-5.jsonl", "train.jsonl", "valid.jsonl"]


def test_commonvoice_data(tmp_path, tiny_config):
    """Stages 1-2 (stages 3-7 are egs/common's, run by the LibriSpeech test)."""
    lang = commonvoice_tree(tmp_path / "corpus")
    rows = (lang / "train.tsv").read_text().splitlines()
    for split, who in (("dev", "devspk"), ("test", "testspk")):  # other voices, as CV's splits
        (lang / f"{split}.tsv").write_text("\n".join([rows[0]] + [
            x.replace("spk", who, 1) for x in rows[1:7 if split == "dev" else 13]]) + "\n")
    script = recipe_copy(tmp_path, "commonvoice")
    r = run(script, "--lang", "en")
    assert r.returncode == 2 and "give --corpus" in r.stderr
    r = run(script, "--corpus", lang, "--config", tiny_config, "--lang", "fr", "--stop-stage", "2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "text: unicode" in r.stdout  # not English: any script's letters kept
    data = script.parent / "data" / "fr"
    assert [sum(1 for _ in open(data / f"{s}.jsonl")) for s in ("train", "valid", "test")] == \
        [12, 6, 12]
    assert (data / "tokenizer_tiny.json").is_file()
