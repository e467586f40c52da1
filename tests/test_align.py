"""Forced alignment: the Viterbi path through a transcript is torchaudio's (its score), with any
checkpoint spacing; ``ctcasr align`` writes CTM / JSON / TextGrid and reports what it cannot
align instead of inventing it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torchaudio.functional as AF
from test_transcribe import trained, utterance  # noqa: F401

from ctcasr.decode.align import align, viterbi
from ctcasr.errors import CtcasrError
from ctcasr.tokenizer import CharTokenizer


def path_score(lp: torch.Tensor, labels: list[int]) -> float:
    return sum(float(lp[t, k]) for t, k in enumerate(labels))


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_is_the_best_path_whatever_the_checkpoints(seed):
    g = torch.Generator().manual_seed(seed)
    t_len, v = 40 + 7 * seed, 6
    lp = torch.randn(t_len, v, generator=g).mul(2).log_softmax(-1)
    tokens = torch.randint(1, v, (t_len // 4,), generator=g).tolist()
    want, _ = AF.forced_align(lp[None], torch.tensor([tokens], dtype=torch.int32), blank=0)
    for checkpoint in (1, 3, 7, 1000):
        on = viterbi(lp, tokens, checkpoint).tolist()
        labels = [0 if k < 0 else tokens[k] for k in on]
        assert path_score(lp, labels) == pytest.approx(path_score(lp, want[0].tolist()),
                                                       abs=1e-4)
        spelled = [k for i, k in enumerate(on) if k >= 0 and (i == 0 or on[i - 1] != k)]
        assert spelled == list(range(len(tokens)))  # every token, in order, once


def test_too_little_audio_is_refused_not_invented():
    lp = torch.zeros(3, 4).log_softmax(-1)
    with pytest.raises(CtcasrError, match="3 output frames cannot carry 3 units .*needs 4"):
        viterbi(lp, [1, 1, 2])
    tok = CharTokenizer(list("ab▁"))
    with pytest.raises(CtcasrError, match="cannot spell the word 'abc'"):
        align(torch.zeros(20, 4).log_softmax(-1), ["abc"], tok, 0.04)


def test_words_and_units_in_time():
    tok = CharTokenizer(list("ab▁"))
    ids = {c: tok.encode(c)[0] for c in "ab"}
    lp = torch.full((12, tok.vocab_size), -9.0)
    lp[:, 0] = -0.01
    for t, c in ((2, "a"), (3, "a"), (5, "b"), (9, "b"), (10, "a")):  # "ab" at 2-6, "ba" at 9-11
        lp[t] = -9.0
        lp[t, ids[c]] = -0.01
    lp[7, tok.encode("a b")[1]] = 0.0  # the word boundary
    words = align(lp.log_softmax(-1), ["ab", "ba"], tok, 0.1)
    assert [w.unit for w in words] == ["ab", "ba"]
    assert (words[0].start, words[0].end) == pytest.approx((0.2, 0.6))
    assert [(u.unit, round(u.start, 3), round(u.end, 3)) for u in words[1].units] == \
        [("b", 0.9, 1.0), ("a", 1.0, 1.1)]
    assert all(0.9 < w.score <= 1.0 for w in words)


def test_align_command(trained, tmp_path):  # noqa: F811
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(3)
    lines = []
    for i in range(3):
        wave, text = utterance(rng, sr=16000, seed=300 + i)
        sf.write(tmp_path / f"u{i}.wav", wave, 16000)
        lines.append({"id": f"u{i}", "audio": f"u{i}.wav", "duration": len(wave) / 16000,
                      "text": text})
    lines.append({"id": "short", "audio": "u0.wav", "duration": lines[0]["duration"],
                  "text": " ".join(["ab"] * 200)})  # far more text than the audio holds
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    cmd = [sys.executable, "-m", "ctcasr", "align", trained, "--manifest", manifest]
    r = subprocess.run([*cmd, "--format", "json", "-o", tmp_path / "a.jsonl"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "m.jsonl:4: cannot align: " in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([*cmd, "--format", "json", "-o", tmp_path / "a.jsonl", "--skip-bad"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "1 utterance(s) could not be aligned" in r.stderr, r.stderr
    got = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [g["id"] for g in got] == ["u0", "u1", "u2"]
    for g, line in zip(got, lines, strict=False):
        assert [w["word"] for w in g["words"]] == line["text"].split()
        ends = [(w["start"], w["end"]) for w in g["words"]]
        assert all(a < b for a, b in ends) and all(b <= c for (_, b), (c, _) in
                                                   zip(ends, ends[1:], strict=False))
        assert ends[-1][1] <= g["duration"] + 1e-6
    r = subprocess.run([*cmd, "--skip-bad", "--units"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith("u0 1 ")
    r = subprocess.run([*cmd, "--skip-bad", "--format", "textgrid", "-o", tmp_path / "tg"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    grid = (tmp_path / "tg" / "u1.TextGrid").read_text()
    assert grid.startswith('File type = "ooTextFile"') and 'name = "units"' in grid
    r = subprocess.run([sys.executable, "-m", "ctcasr", "align", trained, tmp_path / "u0.wav"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "give AUDIO and TEXT, or --manifest" in r.stderr
