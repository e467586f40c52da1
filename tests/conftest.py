"""Shared fixtures: tiny synthetic audio corpora made by the tests themselves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Two "words" told apart by pitch; an utterance is 1-3 words with short pauses.
WORD_HZ = {"ab": 300.0, "ba": 900.0}


def tone(freq: float, seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    sweep = np.sin(2 * math.pi * (freq * t + 50 * t * t))
    return (0.3 * sweep + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def make_corpus(folder: Path, n: int = 12, sr: int = 8000, seed: int = 0) -> Path:
    """Write n WAVs and a manifest (relative audio paths); returns the manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = list(WORD_HZ)
    lines = []
    for i in range(n):
        text = [words[j] for j in rng.integers(0, 2, size=1 + i % 3)]
        pause = np.zeros(int(0.1 * sr), dtype=np.float32)
        parts = [pause]
        for k, w in enumerate(text):
            parts += [tone(WORD_HZ[w], 0.25, sr, seed=i * 10 + k), pause]
        wav = np.concatenate(parts)
        name = f"utt{i:03d}.wav"
        sf.write(folder / name, wav, sr)
        lines.append({"id": f"utt{i:03d}", "audio": name, "duration": len(wav) / sr,
                      "text": " ".join(text)})
    manifest = folder / "data.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return manifest


# One fixed thread: with the governor (train.num_threads 0) the thread count follows the
# machine's load, and 1 and 2 threads differ in the last digits, so the bitwise resume tests
# would fail whenever something else runs (they did, beside a training run, 2026-12-04).
TINY_CONFIG = """
data:
  features: {sample_rate: 8000, num_mel_bins: 23}
  max_frames_per_batch: 400
model:
  frontend: {subsampling: 4, channels: 8, dim: 16}
  encoder: lstm
  encoder_conf: {hidden_size: 16, num_layers: 2, dropout: 0.1}
scheduler: {warmup_steps: 5, peak_lr: 0.005}
train: {epochs: 3, log_every: 1, seed: 7, num_threads: 1}
"""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus")


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_CONFIG)
    return p
