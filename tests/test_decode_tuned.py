"""egs/common/decode_tuned.sh: `ctcasr tune-lm` gets the grid and the validation set, then valid
is decoded greedily and each test set greedily, with the beam alone and as the tuned model
carries (no decoding options: the model's own). ``ctcasr`` is a stub here that records its
calls, so no model is needed; tune-lm itself is tested in test_tune.py."""

from __future__ import annotations

import os
import stat
import subprocess

from conftest import REPO

STUB = r"""#!/usr/bin/env python3
import sys
from pathlib import Path
args = sys.argv[1:]
log = Path(args[args.index("--checkpoint") + 1] if "--checkpoint" in args else args[1])
with open(log.parent / "calls.txt", "a") as f:
    f.write(" ".join(args) + "\n")
if args[0] == "tune-lm":
    print("LM weight 0.5, word bonus 1, unk penalty -inf (best on valid)")
"""


def run_script(tmp_path, more: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "ctcasr"
    stub.write_text(STUB)
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    exp = tmp_path / "exp"
    exp.mkdir()
    script = (f'. "{REPO}/egs/common/decode_tuned.sh"; '
              f'decode_tuned "{exp}" data 32 "0.3 0.5" "0 1" "0 -5 -inf" "{more}"')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    return r, (exp / "calls.txt").read_text().splitlines()


def test_tune_on_valid_then_decode_each_test_set_three_ways(tmp_path):
    r, calls = run_script(tmp_path, "strings")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "LM weight 0.5, word bonus 1, unk penalty -inf (best on valid)"
    exp = tmp_path / "exp"
    assert calls[0] == (f"tune-lm {exp}/model.pt --valid data/valid.jsonl --lm "
                        "data/lm_3gram.arpa --beam-size 32 --lm-weights 0.3 0.5 --word-bonuses "
                        "0 1 --unk-penalties=0 -5 -inf")
    decodes = [c.split(" --out-dir ") for c in calls[1:]]
    assert all(c[0].startswith(f"decode --checkpoint {exp}/model.pt --manifest ") for c in decodes)
    got = [(c[0].split("--manifest ")[1], c[1]) for c in decodes]
    assert got == [
        ("data/valid.jsonl", f"{exp}/decode_valid_greedy --decoder greedy"),
        ("data/test.jsonl", f"{exp}/decode_test_greedy --decoder greedy"),
        ("data/test.jsonl", f"{exp}/decode_test_beam --decoder beam --lm none"),
        ("data/test.jsonl", f"{exp}/decode_test_beam_lm"),  # as the model carries
        ("data/strings.jsonl", f"{exp}/decode_strings_greedy --decoder greedy"),
        ("data/strings.jsonl", f"{exp}/decode_strings_beam --decoder beam --lm none"),
        ("data/strings.jsonl", f"{exp}/decode_strings_beam_lm"),
    ]


def test_a_failed_tuning_stops_before_any_decode(tmp_path):
    bin_dir = tmp_path / "bin"
    r, _ = run_script(tmp_path, "")
    stub = bin_dir / "ctcasr"
    stub.write_text(STUB.replace('if args[0] == "tune-lm":\n',
                                 'if args[0] == "tune-lm":\n    sys.exit(3)\n'))
    (tmp_path / "exp" / "calls.txt").unlink()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    script = (f'set -e; . "{REPO}/egs/common/decode_tuned.sh"; '
              f'decode_tuned "{tmp_path}/exp" data 32 "0.3" "0" "0"')
    r = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == 3
    assert (tmp_path / "exp" / "calls.txt").read_text().count("\n") == 1  # tune-lm only
