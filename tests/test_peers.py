"""benchmarks/peers: a peer toolkit's posteriors decoded with ctcasr's beam + LM (lm_decode.py),
ESPnet's data directories (espnet/prepare.py), and the peers' own locks."""

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctcasr.lm import train_kneser_ney

REPO = Path(__file__).resolve().parents[1]


def _lm_decode():
    spec = importlib.util.spec_from_file_location("lm_decode",
                                                  REPO / "benchmarks/peers/lm_decode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_peers_are_tuned_on_the_recipes_lm_grid():
    # the peers' LM settings must be chosen from the grid ctcasr's own model is chosen from
    run_sh = (REPO / "egs/speechocean/run.sh").read_text()
    for name, values in _lm_decode().GRID.items():
        assert re.search(rf'^{name}="([^"]*)"', run_sh, re.M)[1] == values, name


def _posteriors(labels: list[str], paths: list[list[str]]) -> list[torch.Tensor]:
    """Peaked log-posteriors, one frame per symbol of each path ('-' is the blank)."""
    out = []
    for path in paths:
        lp = torch.full((len(path), len(labels)), math.log(0.02))
        for t, sym in enumerate(path):
            lp[t, 0 if sym == "-" else labels.index(sym)] = math.log(0.9)
        out.append(lp.log_softmax(-1))
    return out


def test_a_peers_label_list_is_read_as_a_character_tokenizer_and_the_lm_applied(tmp_path):
    # the peer's own label order (blank first, the space as " " anywhere) is not ctcasr's: the
    # words must come out right all the same, and the LM choose between acoustic near-ties
    mod = _lm_decode()
    labels = ["<blank>", " ", "t", "a", "c"]
    ids = ["u1", "u2"]
    # u2: "cac" a little ahead of "cat" on the acoustics of the last letter
    logp = _posteriors(labels, [list("at- cat"), list("cat cat")])
    logp[1][6, labels.index("t")], logp[1][6, labels.index("c")] = math.log(0.4), math.log(0.5)
    for name in ("valid", "test"):
        torch.save({"ids": ids, "logp": logp, "labels": labels}, tmp_path / f"logp_{name}.pt")
    lm = tmp_path / "lm.arpa"
    train_kneser_ney(["cat at", "cat cat", "at cat"], order=2).write_arpa(lm)
    (tmp_path / "ref.txt").write_text("u1\tat cat\nu2\tcat cat\n")

    labels_tok = mod.labels_tokenizer(labels)
    assert labels_tok.pieces == ["<blank>", "▁", "t", "a", "c"]
    assert labels_tok.decode([4, 3, 2, 1, 4, 3, 2]) == "cat cat"

    import sys
    argv = sys.argv
    sys.argv = ["lm_decode", str(tmp_path / "logp_valid.pt"), str(tmp_path / "logp_test.pt"),
                "--lm", str(lm), "--ref-valid", str(tmp_path / "ref.txt"), "--out",
                str(tmp_path / "exp"), "--beam", "8", "--lm-weights", "1.0",
                "--word-bonuses", "0", "--unk-penalties", "-5"]
    try:
        mod.main()
    finally:
        sys.argv = argv
    beam = (tmp_path / "exp/decode_test_beam/hyp.txt").read_text().splitlines()
    fused = (tmp_path / "exp/decode_test_beam_lm/hyp.txt").read_text().splitlines()
    assert beam[0] == "u1\tat cat" and fused[0] == "u1\tat cat"
    assert beam[1] == "u2\tcat cac"  # the acoustics alone
    assert fused[1] == "u2\tcat cat"  # the LM's word, where the audio could not tell
    assert (tmp_path / "exp/lm_tuning.txt").read_text().count("\n") == 1


def _pins(lock: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock.read_text(), re.M))


@pytest.mark.parametrize("peer", ["speechbrain", "espnet"])
def test_a_peers_lock_is_hashed_and_has_the_projects_torch(peer):
    # a peer is compared on the same torch / torchaudio as ctcasr, installed from hashes only
    lock = REPO / "benchmarks/peers" / peer / "requirements.txt"
    ours, theirs = _pins(REPO / "requirements.txt"), _pins(lock)
    for pkg in ("torch", "torchaudio"):
        assert theirs[pkg] == ours[pkg], (peer, pkg)
    entries = re.split(r"\n(?=[A-Za-z])", lock.read_text().split("\n", 2)[2])
    assert len(entries) == len(theirs) > 20
    assert all("--hash=sha256:" in e for e in entries)


def test_espnet_data_dirs_and_token_list_from_manifests(tmp_path):
    rows = {"train": [("b", "b.flac", "ab ba", "s1"), ("a", "a.opus", "aab", "s2")],
            "valid": [("v", "v.flac", "ba", "s3")], "test": [("t", "t.flac", "ab", "s4")]}
    args = [sys.executable, str(REPO / "benchmarks/peers/espnet/prepare.py"),
            "--out", str(tmp_path / "data")]
    for split, utts in rows.items():
        path = tmp_path / f"{split}.jsonl"
        path.write_text("".join(json.dumps({"id": i, "audio": a, "duration": 1.0, "text": t,
                                            "speaker": s}) + "\n" for i, a, t, s in utts))
        args += [f"--{split}", str(path)]
    subprocess.run(args, check=True, capture_output=True)
    train = tmp_path / "data/train"
    assert (train / "wav.scp").read_text() == "a a.opus\nb b.flac\n"  # sorted by id
    assert (train / "text").read_text() == "a aab\nb ab ba\n"
    assert (train / "utt2spk").read_text() == "a s2\nb s1\n"
    assert (tmp_path / "data/test/text").read_text() == "t ab\n"
    # ESPnet's CTC char list: blank first, then <unk>, characters by frequency, <sos/eos> last
    assert (tmp_path / "data/tokens.txt").read_text().split() == [
        "<blank>", "<unk>", "a", "b", "<space>", "<sos/eos>"]

    (tmp_path / "valid.jsonl").write_text('{"id": "v"}\n')
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode != 0 and f"{tmp_path / 'valid.jsonl'}:1:" in r.stderr


ESPNET_PYTHON = REPO / ".venv-espnet/bin/python"


@pytest.mark.skipif(not ESPNET_PYTHON.exists(),
                    reason="no .venv-espnet (make bench-espnet installs it)")
def test_espnets_step_answers_train_mfus_questions():
    # train_mfu.py --espnet times ESPnet's step through these answers, one number per line
    # (ESPnet's imports print on stdout: they must not reach the answers)
    proc = subprocess.run([str(ESPNET_PYTHON), str(REPO / "benchmarks/peers/espnet/step.py"),
                           "--batch", "2x120", "--threads", "1"], input="params\nflops\n2\n",
                          capture_output=True, text=True, timeout=600, check=True)
    params, flops, step_s = map(float, proc.stdout.split())
    assert params == 4622430  # 8 x 144 Conformer + CTC over 30 units (train_mfu's VOCAB)
    # forward + backward of 2 x 120 frames: ~0.16 of 4 x 375's 20.5 GFLOP, ~3.3 GFLOP
    assert 1e9 < flops < 4e9
    assert step_s > 0
