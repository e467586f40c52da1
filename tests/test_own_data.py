"""docs/own-data.md, run as written: from Kaldi data dirs to a WER report with LM settings tuned
on a validation set of held-out speakers, with the command line alone (fabricated audio, and a
tiny network standing in for the starting config the page names)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import REPO, WORD_HZ, tone

TINY = """
data:
  features: {sample_rate: 8000, num_mel_bins: 23}
  max_frames_per_batch: 600
model:
  frontend: {subsampling: 4, channels: 8, dim: 16}
  encoder: lstm
  encoder_conf: {hidden_size: 16, num_layers: 1}
scheduler: {warmup_steps: 5, peak_lr: 0.005}
train: {epochs: 3, seed: 5, num_threads: 1}
"""


def kaldi_dir(folder: Path, speakers: list[str], per_speaker: int, seed: int) -> None:
    """text / wav.scp / utt2spk of two-word tone sentences, audio under folder's parent."""
    rng = np.random.default_rng(seed)
    wav_dir = folder.parent / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True)
    text, scp, spk = [], [], []
    for s in speakers:
        for i in range(per_speaker):
            utt = f"{s}-{i:02d}"
            words = [list(WORD_HZ)[j] for j in rng.integers(0, 2, size=2)]
            pause = np.zeros(800, dtype=np.float32)
            parts = [pause]
            for k, w in enumerate(words):
                parts += [tone(WORD_HZ[w], 0.3, 8000, seed=i * 7 + k), pause]
            sf.write(wav_dir / f"{utt}.wav", np.concatenate(parts), 8000)
            text.append(f"{utt} {' '.join(words).upper()}")
            scp.append(f"{utt} wav/{utt}.wav")
            spk.append(f"{utt} {s}")
    for name, lines in (("text", text), ("wav.scp", scp), ("utt2spk", spk)):
        (folder / name).write_text("\n".join(lines) + "\n")


def test_own_data_page_runs_as_written(tmp_path):
    page = (REPO / "docs" / "own-data.md").read_text(encoding="utf-8")
    block = re.search(r"## The whole path.*?```bash\n(.*?)```", page, re.S).group(1)
    kaldi_dir(tmp_path / "data" / "train", [f"spk{k}" for k in range(8)], 6, seed=1)
    kaldi_dir(tmp_path / "data" / "test", ["new1", "new2"], 6, seed=2)
    config = tmp_path / "egs" / "speechocean" / "conf" / "lstm.yaml"  # the page's config path
    config.parent.mkdir(parents=True)
    config.write_text(TINY)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    def lines(name: str) -> list[dict]:
        return [json.loads(x) for x in (tmp_path / "my" / name).read_text().splitlines()]

    train, valid = lines("train.jsonl"), lines("valid.jsonl")
    assert len(train) + len(valid) == 48 and valid
    assert not {u["speaker"] for u in train} & {u["speaker"] for u in valid}
    tuned = (tmp_path / "exp" / "my" / "lm_tuning.txt").read_text()
    assert tuned.startswith("LM weight ") and "(best on valid)" in tuned
    summary = json.loads((tmp_path / "exp/my/decode_test/summary.json").read_text())
    assert summary["utterances"] == 12 and summary["words"] == 24
    assert "decoder: beam 32 + LM" in r.stderr  # the test decoded as the model carries
