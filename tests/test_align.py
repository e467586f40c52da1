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

from ctcasr.decode.align import GARBAGE, Find, align, find, viterbi
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


def reference_find(lp: torch.Tensor, per_word: list[list[int]], how: Find) -> float:
    """The best score of :func:`find`'s graph (its doc), by a plain max-plus pass over an
    explicit list of arcs."""
    tokens = [t for w in per_word for t in w]
    labels = [0] + [x for t in tokens for x in (t, 0)]
    starts = [sum(len(w) for w in per_word[:i]) for i in range(len(per_word))]
    bounds = [2 * k for k in starts] + [len(labels) - 1]
    arcs = {s: [(s, 0.0)] + ([(s - 1, 0.0)] if s else []) for s in range(len(labels))}
    for s in range(3, len(labels), 2):
        if labels[s] != labels[s - 2]:
            arcs[s].append((s - 2, 0.0))
    for j, b in enumerate(bounds):
        arcs[b] += [(bounds[i], -how.skip_penalty * (j - i)) for i in range(j)]

    def emit(t: int, s: int) -> float:
        e = float(lp[t, labels[s]])
        return max(e, float(lp[t, 1:].max()) - how.garbage_penalty) if s in bounds else e

    col = [0.0] + [float("-inf")] * (len(labels) - 1)
    for t in range(lp.shape[0]):
        col = [max(col[p] + c for p, c in arcs[s]) + emit(t, s) for s in range(len(labels))]
    return max(col[-1], col[-2]) if tokens else col[-1]


@pytest.mark.parametrize("seed", range(8))
def test_find_is_the_best_path_of_its_graph(seed):
    """Words left out and garbage frames: the path :func:`find` takes scores what the best
    path of the graph scores, with any checkpoint spacing."""
    g = torch.Generator().manual_seed(seed)
    t_len, v = 10 + seed, 5
    lp = torch.randn(t_len, v, generator=g).mul(3).log_softmax(-1)
    tok = CharTokenizer(list("abcd"))
    words = ["".join("abcd"[int(i)] for i in torch.randint(0, 4, (1 + k % 2,), generator=g))
             for k in range(3 + seed % 3)]
    per_word = [tok.encode(w) for w in words]
    tokens = [t for w in per_word for t in w]
    how = Find(skip_penalty=1.0 + seed % 3, garbage_penalty=0.5 + seed % 2)
    want = reference_find(lp, per_word, how)
    starts = [sum(len(w) for w in per_word[:i]) for i in range(len(words))]
    for checkpoint in (1, 4, 1000):
        on = viterbi(lp, tokens, checkpoint, starts, how).tolist()
        score = sum(float(lp[t, 1:].max()) - how.garbage_penalty if k == GARBAGE
                    else float(lp[t, 0 if k < 0 else tokens[k]]) for t, k in enumerate(on))
        kept = {k for k in on if k >= 0}
        left_out = [i for i, s in enumerate(starts) if s not in kept]
        assert score - how.skip_penalty * len(left_out) == pytest.approx(want, abs=1e-4)
        spelled = [k for i, k in enumerate(on) if k >= 0 and (i == 0 or on[i - 1] != k)]
        assert spelled == sorted(kept)  # tokens in order, each once
        for i in left_out:  # a word is kept whole or left out whole
            assert not kept & set(range(starts[i], starts[i] + len(per_word[i])))


def spoken(tok, words: list[str], frames: int = 3) -> torch.Tensor:
    """Log-probs of ``words`` said one after another: a confident spike per unit, blanks
    between units and between words."""
    rows = [0] * frames
    for w in words:
        for t in tok.encode(w):
            rows += [t, 0]
        rows += [0] * frames
    lp = torch.full((len(rows), tok.vocab_size), -12.0)
    lp[torch.arange(len(rows)), torch.tensor(rows)] = -0.001
    return lp.log_softmax(-1)


def test_find_leaves_out_what_is_not_said_and_marks_what_is_not_written():
    tok = CharTokenizer(list("efhinortuvw"))
    lp = spoken(tok, ["one", "four", "three"])
    got = find(lp, ["one", "two", "three"], tok, 0.1)
    assert [(w.unit, w.index) for w in got.words] == [("one", 0), ("three", 2)]
    assert got.missing == [1]
    assert len(got.unmatched) == 1  # "four": 4 spikes at frames 12, 14, 16, 18
    assert got.unmatched[0] == pytest.approx((1.2, 1.9))
    full = find(lp, ["one", "four", "three"], tok, 0.1)  # nothing to find: forced alignment
    assert full.missing == [] and full.unmatched == []
    assert [(w.start, w.end) for w in full.words] == \
        [(w.start, w.end) for w in align(lp, ["one", "four", "three"], tok, 0.1)]
    none = find(lp[:3], ["one", "two", "three"], tok, 0.1)  # too little audio: nothing found
    assert none.words == [] and none.missing == [0, 1, 2]


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
    # --find: every transcript word is found (in its place) or listed as missing
    text = "ba ab ba " + lines[1]["text"]
    r = subprocess.run([*cmd[:5], tmp_path / "u1.wav", text, "--find", "--format", "json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got, words = json.loads(r.stdout), text.split()
    assert all(words[w["index"]] == w["word"] for w in got["words"])
    assert all(words[m["index"]] == m["word"] for m in got["missing"])
    assert sorted([w["index"] for w in got["words"]] + [m["index"] for m in got["missing"]]) \
        == list(range(len(words)))
    assert [w["index"] for w in got["words"]] == sorted(w["index"] for w in got["words"])
    assert all(0 <= u["start"] < u["end"] <= got["duration"] + 1e-6 for u in got["unmatched"])
