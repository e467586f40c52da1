"""egs/common/decode_tuned.sh: every (weight, bonus, OOV penalty) of the grid decodes valid, the
best of them on valid decodes test, and a closed vocabulary (-inf) can be chosen. ``ctcasr`` is
a stub here that scores each decode by its options, so no model is needed."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from conftest import REPO

STUB = r"""#!/usr/bin/env python3
import json, sys
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--out-dir") + 1])
out.mkdir(parents=True)
opts = " ".join(args)
wer = 50.0
if "--lm" in args:  # the closed vocabulary at weight 0.5 and bonus 1 wins
    wer = 40.0 if "--lm-weight 0.5 --word-bonus 1 --unk-penalty=-inf" in opts else 45.0
(out / "summary.json").write_text(json.dumps({"wer": wer}))
with open(out.parent / "calls.txt", "a") as f:
    f.write(opts + "\n")
"""


def test_grid_decodes_valid_and_the_best_on_valid_decodes_test(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "ctcasr"
    stub.write_text(STUB)
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    exp = tmp_path / "exp"
    exp.mkdir()
    script = (f'. "{REPO}/egs/common/decode_tuned.sh"; '
              f'decode_tuned "{exp}" data 32 "0.3 0.5" "0 1" "0 -5 -inf"')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "LM weight 0.5, word bonus 1, unk penalty -inf (best on valid)"
    calls = (exp / "calls.txt").read_text().splitlines()
    valid_lm = [c for c in calls if "valid.jsonl" in c and "--lm " in c]
    assert len(valid_lm) == 2 * 2 * 3  # the whole grid, on valid only
    test = [c for c in calls if "test.jsonl" in c]
    assert len(test) == 3  # greedy, beam, beam + LM
    assert test[-1].endswith("--beam-size 32 --lm data/lm_3gram.arpa --lm-weight 0.5 "
                             "--word-bonus 1 --unk-penalty=-inf")
    assert json.loads((exp / "decode_test_beam_lm" / "summary.json").read_text())["wer"] == 40.0
