"""The main job as a user without local corpora runs it: `make digits` is egs/digits/transfer.sh,
which downloads FSDD, speechocean762 and ARCTIC from their upstream homes (here fabricated
archives in their real layouts, served over loopback through CTCASR_MIRROR), trains the English
base, fine-tunes the digits model, and leaves a model that transcribes as its report decoded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from upstream import CATHY_PATH, FSDD_PATH, SPEECHOCEAN_PATH, main_job_archives, serve

# a tiny network at 16 kHz for both trainings (the digits model starts from the English one)
TINY_16K = """
data:
  features: {sample_rate: 16000, num_mel_bins: 23}
  max_frames_per_batch: 1200
model:
  frontend: {subsampling: 4, channels: 8, dim: 16}
  encoder: lstm
  encoder_conf: {hidden_size: 16, num_layers: 1}
scheduler: {warmup_steps: 5, peak_lr: 0.005}
train: {epochs: 1, seed: 3, num_threads: 1}
"""


def test_make_digits_runs_the_transfer_job_whatever_the_local_corpora():
    # as a user types it, not as a sub-make of `make test` (whose flags print directories)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    for data in ("/nonexistent", str(REPO.parent / "shared" / "data")):
        r = subprocess.run(["make", "-n", "--no-print-directory", "digits",
                            f"CTCASR_DATA={data}"], cwd=REPO, capture_output=True, text=True,
                           env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().splitlines()[-1] == "egs/digits/transfer.sh", r.stdout


def test_main_job_downloads_its_corpora_and_its_model_decodes_as_reported(tmp_path):
    egs = tmp_path / "egs"
    skip = shutil.ignore_patterns("data", "exp", "download")
    for name in ("digits", "speechocean", "arctic", "common"):
        shutil.copytree(REPO / "egs" / name, egs / name, ignore=skip)
    config = tmp_path / "tiny16k.yaml"
    config.write_text(TINY_16K)
    downloads = tmp_path / "downloads"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "CTCASR_DATA": str(tmp_path / "no-local-copies"), "CTCASR_DOWNLOADS": str(downloads)}
    with serve(main_job_archives()) as (url, log):
        r = subprocess.run(["bash", egs / "digits" / "transfer.sh", "--english-config", config,
                            "--config", config, "--epochs", "1"],
                           capture_output=True, text=True, env={**env, "CTCASR_MIRROR": url},
                           timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # each archive fetched once (speechocean762 serves both trainings), then unpacked
    assert sorted(p for p, _ in log) == sorted([FSDD_PATH, SPEECHOCEAN_PATH, CATHY_PATH])
    for name, archive in (("fsdd", "fsdd.tar.gz"), ("speechocean762", "speechocean762.tar.gz"),
                          ("arctic", "cathy.tar.gz")):
        assert (downloads / name / f"{archive}.done").exists()
        assert (downloads / name / f"{archive}.sha256").read_text().endswith(f"  {archive}\n")
    # the English base was trained on what was unpacked, then the digits model from it
    english = egs / "speechocean" / "exp" / "tiny16k" / "model.pt"
    assert english.is_file() and "== digits fine-tuned from" in r.stdout
    data = egs / "digits" / "data" / "unseen_george_so"
    counts = {s: sum(1 for _ in open(data / f"{s}.jsonl")) for s in
              ("train", "valid", "test", "test_unseen", "test_speechocean")}
    assert counts["test_speechocean"] == 2 and all(counts.values()), counts
    rows = [x for x in r.stdout.splitlines() if x.startswith("| test") and "WER" not in x]
    assert len(rows) == 6 and sum("beam 10 + 3-gram LM (LM weight" in x for x in rows) == 3, rows

    # the model the README serves: it carries the LM and the settings chosen on valid, and
    # transcribes an unseen speaker's audio as the report's beam + LM decode did
    exp = egs / "digits" / "exp" / "transfer_short"
    tuned = (exp / "lm_tuning.txt").read_text()
    assert tuned.startswith("LM weight ") and tuned.rstrip().endswith("(best on valid)")
    utts = [json.loads(x) for x in open(data / "test_unseen.jsonl")][:12]
    audio = [str((data / u["audio"]).resolve()) for u in utts]
    out = subprocess.run([Path(sys.executable).parent / "ctcasr", "transcribe", exp / "model.pt",
                          *audio], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    said = [line.split("\t", 1)[1] for line in out.stdout.splitlines()]
    hyp = dict(line.split("\t", 1) for line in
               (exp / "decode_test_unseen_beam_lm" / "hyp.txt").read_text().splitlines())
    assert said == [hyp[u["id"]] for u in utts]
