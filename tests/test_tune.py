"""`ctcasr tune-lm`: the LM settings chosen on valid travel inside the model, and every way of
decoding it (decode, transcribe, ctcasr.load, an ONNX export) starts from them."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from test_cli import run_cli

import ctcasr
from ctcasr.checkpoint import load_checkpoint
from ctcasr.decode.settings import DecodeSettings
from ctcasr.errors import CtcasrError


def hyps(folder):
    return dict(line.split("\t", 1) for line in (folder / "hyp.txt").read_text().splitlines())


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A tiny trained model, its LM, and the model tuned on a grid (module-wide: one training)."""
    from conftest import TINY_CONFIG, make_corpus

    tmp = tmp_path_factory.mktemp("tune")
    corpus = make_corpus(tmp / "corpus", n=16)
    config = tmp / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    cmd = [sys.executable, "-m", "ctcasr"]
    for args in (["train", "-c", config, "--train", corpus, "--valid", corpus, "--exp-dir",
                  tmp / "exp"], ["lm", "--manifest", corpus, "--order", "2", "-o", tmp / "lm"]):
        r = subprocess.run([*cmd, *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([*cmd, "tune-lm", tmp / "exp" / "model.pt", "--valid", corpus, "--lm",
                        tmp / "lm", "--beam-size", "4", "--lm-weights", "0.2,1.5",
                        "--word-bonuses", "0 2", "--unk-penalties=-inf 0", "--widen", "0", "-o",
                        tmp / "exp" / "tuned.pt"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return tmp, corpus


def test_the_grid_is_scored_and_its_best_point_is_stored_with_the_lm(tuned):
    tmp, _ = tuned
    rows = [x.split("\t") for x in (tmp / "exp" / "lm_tuning.tsv").read_text().splitlines()]
    assert rows[0] == ["lm_weight", "word_bonus", "unk_penalty", "wer", "cer"]
    grid = [(float(w), float(b), float(u), float(e), float(c)) for w, b, u, e, c in rows[1:]]
    assert [g[:3] for g in grid] == [(w, b, u) for w in (0.2, 1.5) for b in (0, 2)
                                     for u in (-math.inf, 0)]
    best = min(grid, key=lambda g: (g[3], g[4]))
    carried = load_checkpoint(tmp / "exp" / "tuned.pt")["decoding"]
    assert (carried["decoder"], carried["beam"]) == ("beam", 4)
    assert (carried["lm_weight"], carried["word_bonus"], carried["unk_penalty"]) == best[:3]
    assert carried["lm"] == (tmp / "lm").read_text()
    assert (tmp / "exp" / "lm_tuning.txt").read_text() == \
        f"LM weight {best[0]:g}, word bonus {best[1]:g}, unk penalty {best[2]:g} (best on valid)\n"
    assert "decoding" not in load_checkpoint(tmp / "exp" / "model.pt")  # -o: a new file


def test_widened_values():
    from ctcasr.infer.manifest import widened

    assert widened([0.3, 0.5, 0.8], 0.8, floor=0.0) == pytest.approx([1.1])
    assert widened([0.3, 0.5, 0.8], 0.5, floor=0.0) == []
    assert widened([0.3, 0.5, 0.8], 0.3, floor=0.0) == pytest.approx([0.1])
    assert widened([0.2, 1.5], 0.2, floor=0.0) == [0.0]  # the step would go below 0
    assert widened([0.0, 0.5], 0.0, floor=0.0) == []
    assert widened([0, 1, 2], 0) == [-1]  # bonuses may go below 0
    assert widened([2], 2) == []


def test_a_best_point_on_the_edge_widens_the_grid(tuned, tmp_path):
    """Weights 0 and 0.01 (next to nothing): the tiny model's best weight is at the upper edge
    unless the LM does not matter; the grid grows past it, and the choice is the best of all."""
    tmp, corpus = tuned
    out = tmp_path / "w" / "tuned.pt"
    out.parent.mkdir()
    r = subprocess.run([sys.executable, "-m", "ctcasr", "tune-lm", tmp / "exp" / "model.pt",
                        "--valid", corpus, "--lm", tmp / "lm", "--beam-size", "4",
                        "--lm-weights", "0 2", "--word-bonuses", "-4 -3",
                        "--unk-penalties=0", "--widen", "2", "-o", out],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [x.split("\t") for x in (out.parent / "lm_tuning.tsv").read_text().splitlines()[1:]]
    points = [(float(w), float(b)) for w, b, *_ in rows]
    assert points[:4] == [(0, -4), (0, -3), (2, -4), (2, -3)]
    assert len(points) == len(set(points))  # no point decoded twice
    first = min(rows[:4], key=lambda x: (float(x[3]), float(x[4])))
    w, b = float(first[0]), float(first[1])
    grew = points[4:]
    # the bonus is always on an edge: it grew past it; the weight grew past 2 if 2 was best,
    # never below 0
    assert any(p[1] == (-2 if b == -3 else -5) for p in grew)
    assert any(p[0] == 4 for p in grew) if w == 2 else all(p[0] in (0, 2) for p in grew)
    best = min(rows, key=lambda x: (float(x[3]), float(x[4])))
    carried = load_checkpoint(out)["decoding"]
    assert (carried["lm_weight"], carried["word_bonus"]) == (float(best[0]), float(best[1]))


def test_decode_starts_from_the_carried_settings(tuned, tmp_path, capsys, monkeypatch):
    tmp, corpus = tuned
    model, carried = tmp / "exp" / "tuned.pt", load_checkpoint(tmp / "exp" / "tuned.pt")
    d = carried["decoding"]
    runs = {"carried": [], "explicit": ["--decoder", "beam", "--beam-size", "4", "--lm",
                                        tmp / "lm", "--lm-weight", d["lm_weight"],
                                        f"--unk-penalty={d['unk_penalty']}", "--word-bonus",
                                        d["word_bonus"]],
            "greedy": ["--decoder", "greedy"], "plain": []}
    for name, opts in runs.items():
        ckpt = tmp / "exp" / "model.pt" if name == "plain" else model
        code, out, err = run_cli(["decode", "--checkpoint", ckpt, "--manifest", corpus,
                                  "--out-dir", tmp_path / name, *opts], capsys, monkeypatch)
        assert code == 0, err
        if name == "carried":
            assert "decoder: beam 4 + LM (weight" in err
    assert hyps(tmp_path / "carried") == hyps(tmp_path / "explicit")
    assert hyps(tmp_path / "greedy") == hyps(tmp_path / "plain")  # a model without: greedy
    # the WER tune-lm measured for the chosen point is the WER decode gets with it
    summary = json.loads((tmp_path / "carried" / "summary.json").read_text())
    tsv = (tmp / "exp" / "lm_tuning.tsv").read_text().splitlines()[1:]
    assert min(float(x.split("\t")[3]) for x in tsv) == pytest.approx(summary["wer"], abs=0.01)


def test_load_and_transcribe_use_the_carried_settings_unless_told(tuned, tmp_path, capsys,
                                                                  monkeypatch):
    tmp, corpus = tuned
    model = tmp / "exp" / "tuned.pt"
    lines = [json.loads(x) for x in corpus.read_text().split("\n") if x]
    audio = [str(corpus.parent / u["audio"]) for u in lines]
    asr = ctcasr.load(model)
    assert asr.settings.decoder == "beam" and asr.settings.options.lm is not None
    carried = [t.text for t in asr.transcribe(audio)]
    # the hypotheses `ctcasr decode` wrote for the manifest with the same settings
    code, _, err = run_cli(["decode", "--checkpoint", model, "--manifest", corpus, "--out-dir",
                            tmp_path / "d"], capsys, monkeypatch)
    assert code == 0, err
    assert carried == [hyps(tmp_path / "d")[u["id"]] for u in lines]
    code, out, err = run_cli(["transcribe", model, *audio], capsys, monkeypatch)
    assert code == 0 and [x.split("\t")[1] for x in out.splitlines()] == carried, err
    greedy = ctcasr.load(model, decoder="greedy")
    assert greedy.settings.options.lm is None
    assert [t.text for t in greedy.transcribe(audio)] == \
        [t.text for t in ctcasr.load(tmp / "exp" / "model.pt").transcribe(audio)]
    no_lm = ctcasr.load(model, lm="none")
    assert no_lm.settings.decoder == "beam" and no_lm.settings.options.lm is None
    other = ctcasr.load(model, lm_weight=3.0)
    assert other.settings.options.lm_weight == 3.0 and other.settings.options.lm is not None
    # an ONNX export carries them too
    pytest.importorskip("onnxruntime")
    from ctcasr.infer.export import export

    onnx, _ = export(model, "onnx", tmp_path / "tuned.onnx")
    exported = ctcasr.load(onnx)
    assert exported.settings.describe() == asr.settings.describe()
    assert [t.text for t in exported.transcribe(audio)] == carried


def test_settings_round_trip_and_overrides():
    from ctcasr.decode import DecodeOptions
    from ctcasr.lm import train_kneser_ney

    lm = train_kneser_ney(["a b", "b a c"], 2)
    s = DecodeSettings("beam", DecodeOptions(beam=7, lm=lm, lm_weight=0.4, word_bonus=1.0,
                                             unk_penalty=-math.inf, vocab={"d": 2.0}), "note")
    back = DecodeSettings.from_state(s.state_dict(), "x.pt")
    assert back.state_dict() == s.state_dict() and back.note == "note"
    assert back.options.lm.arpa() == lm.arpa() and back.options.vocab == {"d": 2.0}
    assert s.override().state_dict() == s.state_dict()
    assert s.override(decoder="greedy").options.lm is None
    assert s.override(lm="none").options.lm is None and s.override(lm="none").decoder == "beam"
    assert DecodeSettings().override(lm="x.arpa").decoder == "beam"  # an LM means beam
    assert s.override(beam=3).note == ""  # changed: no longer what was tuned
    with pytest.raises(CtcasrError, match="--nbest needs --decoder beam"):
        DecodeSettings().override(nbest=3)
    with pytest.raises(CtcasrError, match="x.pt: bad decoding settings"):
        DecodeSettings.from_state({"decoder": "beam", "beam": "many"}, "x.pt")


def test_bad_grids_are_one_line(tuned, capsys, monkeypatch):
    tmp, corpus = tuned
    code, _, err = run_cli(["tune-lm", tmp / "exp" / "model.pt", "--valid", corpus, "--lm",
                            tmp / "lm", "--lm-weights", "0.3 heavy"], capsys, monkeypatch)
    assert code == 1 and err.strip() == ("error: --lm-weights: expected numbers separated by "
                                         "spaces, got '0.3 heavy'")
