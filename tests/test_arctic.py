"""egs/arctic: text normalisation, the split by phrase, and that the tokenizer and the LM see
training text only (the last on the shared corpus, skipped when it is absent)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, SHARED_DATA

RECIPE = REPO / "egs" / "arctic"
ARCTIC = SHARED_DATA / "arctic"
_spec = importlib.util.spec_from_file_location("arctic_prepare", RECIPE / "local" / "prepare.py")
prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare)


@pytest.mark.parametrize("raw, expected", [
    ("Lord, but I'm glad to see you again, Phil.", "lord but i'm glad to see you again phil"),
    ("God bless 'em, I hope I'll go on seeing them forever.",
     "god bless em i hope i'll go on seeing them forever"),
    ("the after-room; the thousand-years-long road", "the after room the thousand years long road"),
    ("O\u2019Brien\u2019s boys' rock 'n' roll", "o'brien's boys rock n roll"),
    ("  Hello -- world!?  \"Quoted\" (and) so: on ", "hello world quoted and so on"),
    ("...", ""),
])
def test_normalise(raw, expected):
    assert prepare.normalise(raw) == expected


def test_phrase_side_is_a_function_of_the_phrase_alone():
    sides = [prepare.side(f"a{i:04d}", 6, 10) for i in range(2000)]
    assert sides == [prepare.side(f"a{i:04d}", 6, 10) for i in range(2000)]
    share = {s: sides.count(s) / len(sides) for s in ("train", "valid", "test")}
    assert 0.08 < share["test"] < 0.12 and 0.045 < share["valid"] < 0.075
    with pytest.raises(ValueError, match="not an ARCTIC utterance name"):
        prepare.phrase_of("a0001_take1")


def _fake_corpus(folder: Path, upstream: bool) -> dict[str, str]:
    """Tiny corpus in either layout: 60 phrases, 1-3 takes each, 0.2 s of noise per take."""
    rng = np.random.default_rng(0)
    texts = {}
    folder.mkdir(parents=True)
    if not upstream:
        (folder / "audio").mkdir()
    for p in range(60):
        for take in range(1 + p % 3):
            utt = f"arctic_{'ab'[p % 2]}{p:04d}_{1000 + take}"
            texts[utt] = f"Phrase number {p}, take-{take}."
            sr = 48000 if upstream else 16000
            wav = (0.1 * rng.standard_normal(int(0.2 * sr))).astype(np.float32)
            if upstream:
                sf.write(folder / f"{utt}.wav", np.stack([wav, wav], 1), sr)
                (folder / f"{utt}.txt").write_text(texts[utt] + "\n")
            else:
                sf.write(folder / "audio" / f"{utt}.flac", wav, sr)
    if not upstream:
        (folder / "transcripts.tsv").write_text("".join(f"{u}\t{t}\n" for u, t in texts.items()))
    return texts


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("upstream", [False, True], ids=["shared-layout", "upstream-layout"])
def test_prepare_splits_by_phrase(tmp_path, upstream):
    texts = _fake_corpus(tmp_path / "corpus", upstream)
    out = tmp_path / "data"
    subprocess.run([sys.executable, RECIPE / "local" / "prepare.py", tmp_path / "corpus", out,
                    "--valid-percent", "20", "--test-percent", "20"], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    sets = {s: _read(out / f"{s}.jsonl") for s in ("train", "valid", "test")}
    ids = [u["id"] for us in sets.values() for u in us]
    assert sorted(ids) == sorted(texts)  # every utterance on exactly one side
    phrases = {s: {prepare.phrase_of(u["id"]) for u in us} for s, us in sets.items()}
    assert all(phrases[s] for s in phrases)
    assert not phrases["train"] & phrases["valid"] and not phrases["train"] & phrases["test"] \
        and not phrases["valid"] & phrases["test"]
    for us in sets.values():
        for u in us:
            assert u["text"] == prepare.normalise(texts[u["id"]])
            assert u["duration"] == pytest.approx(0.2, abs=1e-3)
            assert Path(u["audio"]).is_absolute() and Path(u["audio"]).exists()
    assert (out / "text_train.txt").read_text().splitlines() == [u["text"] for u in sets["train"]]


@pytest.mark.skipif(not ARCTIC.is_dir(), reason=f"needs the ARCTIC corpus at {ARCTIC}")
def test_recipe_tokenizer_and_lm_see_training_text_only(tmp_path):
    from ctcasr.config import load_config
    from ctcasr.lm import NGramLM
    from ctcasr.tokenizer import load_tokenizer, train_tokenizer

    egs = tmp_path / "egs"
    shutil.copytree(REPO / "egs" / "common", egs / "common")
    shutil.copytree(RECIPE, egs / "arctic",
                    ignore=shutil.ignore_patterns("data", "exp", "download"))
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for first, last in ((1, 2), (5, 5)):
        subprocess.run(["bash", egs / "arctic" / "run.sh", "--corpus", ARCTIC,  # BPE config
                        "--config", "conf/conformer.yaml", "--stage",
                        str(first), "--stop-stage", str(last)], check=True, capture_output=True,
                       env=env)
    data = egs / "arctic" / "data"
    sets = {s: _read(data / f"{s}.jsonl") for s in ("train", "valid", "test")}
    assert sum(len(us) for us in sets.values()) == 1463
    phrases = {s: {prepare.phrase_of(u["id"]) for u in us} for s, us in sets.items()}
    assert not phrases["train"] & (phrases["valid"] | phrases["test"])
    assert not phrases["valid"] & phrases["test"]

    train_text = [u["text"] for u in sets["train"]]
    cfg = load_config(RECIPE / "conf" / "conformer.yaml").tokenizer
    pieces = load_tokenizer(data / "tokenizer_conformer.json", cfg)
    expected = train_tokenizer(cfg, train_text)
    with_test = train_tokenizer(cfg, train_text + [u["text"] for u in sets["test"]])
    listing = [pieces.id_to_piece(i) for i in range(pieces.vocab_size)]
    assert listing == [expected.id_to_piece(i) for i in range(expected.vocab_size)]
    assert listing != [with_test.id_to_piece(i) for i in range(with_test.vocab_size)]

    lm_words = NGramLM.read_arpa(data / "lm_3gram.arpa").vocab - {"<s>", "</s>", "<unk>"}
    train_words = {w for t in train_text for w in t.split()}
    test_only = {w for u in sets["test"] for w in u["text"].split()} - train_words
    assert lm_words == train_words and test_only and not lm_words & test_only
