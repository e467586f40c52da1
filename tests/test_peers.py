"""benchmarks/peers/lm_decode.py: a peer toolkit's posteriors decoded with ctcasr's beam + LM."""

import importlib.util
import math
from pathlib import Path

import torch

from ctcasr.lm import train_kneser_ney

REPO = Path(__file__).resolve().parents[1]


def _lm_decode():
    spec = importlib.util.spec_from_file_location("lm_decode",
                                                  REPO / "benchmarks/peers/lm_decode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
