"""Issue 6, point 3: the bad-input table, through the CLI, for ``train`` and ``decode``.

Without ``--skip-bad`` each bad input is a one-line error naming the file and manifest line
(exit 1); with it, every bad utterance is skipped, counted and listed at the end of the run and
in ``skipped.txt``: also when the bad file is met in DataLoader worker processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY_CONFIG, make_corpus

from ctcasr.checkpoint import load_checkpoint
from ctcasr.config import load_config
from ctcasr.train.trainer import train
from tests.test_cli import run_cli

SR = 8000


def wav(folder: Path, name: str, samples, subtype: str = "FLOAT") -> str:
    sf.write(folder / name, np.asarray(samples, dtype=np.float32), SR, subtype=subtype)
    return name


def make_bad(folder: Path, kind: str) -> tuple[str, str]:
    """One bad manifest line of ``kind`` (writing its audio into ``folder``), and what the error
    says. ``duration`` is right unless the kind is about it."""
    x = (0.1 * np.sin(np.arange(4000) / 5)).astype(np.float32)  # 0.5 s
    audio, seconds, text = "utt000.wav", 0.5, "ab"
    if kind == "missing":
        audio, needle = "nope.wav", "nope.wav: audio file not found"
    elif kind == "corrupt":
        (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
        audio, needle = "corrupt.wav", "corrupt.wav: cannot decode audio"
    elif kind == "truncated":
        whole = folder / wav(folder, "whole.wav", np.concatenate([x, x]), "PCM_16")  # 1 s
        (folder / "truncated.wav").write_bytes(whole.read_bytes()[:9000])
        audio, seconds, needle = "truncated.wav", 1.0, "truncated.wav: audio holds 0.56 s, the " \
                                                       "manifest says 1.00 s (truncated file?)"
    elif kind == "zero-length":
        audio, needle = wav(folder, "empty.wav", []), "empty.wav: audio has zero samples"
    elif kind in ("nan", "inf"):
        audio = wav(folder, f"{kind}.wav", np.where(np.arange(4000) == 99, float(kind), x))
        needle = f"{kind}.wav: audio contains NaN or infinite samples"
    elif kind == "too-short":  # 0.1 s: 8 frames, 1 after x4 subsampling; 5 labels need 5
        audio, seconds, text = wav(folder, "short.wav", x[:800]), 0.1, "ab ba"
        needle = "short.wav: too short: 8 feature frames give 1 encoder frame(s), CTC needs 5"
    elif kind == "too-short-to-decode":  # 0.05 s: 3 frames, none after subsampling
        audio, seconds, needle = wav(folder, "tiny.wav", x[:400]), 0.05, ""
    elif kind == "empty-text":
        text, needle = " ", "empty transcript for utterance 'empty-text'"
    elif kind == "unencodable":
        text, needle = "ab Q", "utterance 'unencodable': character 'Q' is not in the tokenizer's"
    elif kind == "malformed":
        return "{oops", "not valid JSON"
    elif kind == "not-utf8":
        return '{"id": "\udcff"}', "not valid UTF-8"
    elif kind == "missing-key":
        return '{"id": "missing-key", "duration": 1.0, "text": "ab"}', "missing key(s) audio"
    elif kind == "duplicate-id":
        return json.dumps({"id": "utt000", "audio": "utt000.wav", "duration": 0.4, "text": "ab"}), \
            "duplicate id 'utt000' (first at line 1)"
    else:
        raise ValueError(kind)
    return json.dumps({"id": kind, "audio": audio, "duration": seconds, "text": text}), needle


def with_bad_lines(clean: Path, name: str, lines: list[str]) -> Path:
    """``clean``'s lines, then ``lines`` (from line 13 on), as a manifest in the same folder."""
    text = clean.read_text() + "".join(x + "\n" for x in lines)
    path = clean.with_name(name)
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return path


TRAIN_KINDS = ["missing", "corrupt", "truncated", "zero-length", "nan", "inf", "too-short",
               "empty-text", "malformed", "not-utf8", "missing-key", "duplicate-id"]
DECODE_KINDS = ["missing", "corrupt", "truncated", "zero-length", "nan", "inf",
                "malformed", "not-utf8", "missing-key", "duplicate-id"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A clean corpus, a tiny config and a model trained on it for one epoch."""
    root = tmp_path_factory.mktemp("rel_inputs")
    clean = make_corpus(root / "corpus")
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    exp = root / "exp"
    train(load_config(config, ["train.epochs=1"]), clean, clean, exp)
    return clean, config, exp / "model.pt"


def one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("kind", [*TRAIN_KINDS, "unencodable"])
def test_train_stops_at_a_bad_input_with_one_line(kind, setup, tmp_path, capsys, monkeypatch):
    clean, config, _ = setup
    line, needle = make_bad(clean.parent, kind)
    bad = with_bad_lines(clean, f"train-{kind}.jsonl", [line])
    # the unencodable character is only in the validation set: the tokenizer never saw it
    train = clean if kind == "unencodable" else bad
    code, _, err = run_cli(["train", "-c", config, "--train", train, "--valid", bad,
                            "--exp-dir", tmp_path / "exp"], capsys, monkeypatch)
    msg = one_error_line(err)
    assert code == 1 and needle in msg and f"{bad}:13" in msg, msg


@pytest.mark.parametrize("kind", DECODE_KINDS)
def test_decode_stops_at_a_bad_input_with_one_line(kind, setup, tmp_path, capsys, monkeypatch):
    clean, _, model = setup
    line, needle = make_bad(clean.parent, kind)
    bad = with_bad_lines(clean, f"decode-{kind}.jsonl", [line])
    code, _, err = run_cli(["decode", "--checkpoint", model, "--manifest", bad,
                            "--out-dir", tmp_path / "out"], capsys, monkeypatch)
    msg = one_error_line(err)
    assert code == 1 and needle in msg and f"{bad}:13" in msg, msg


def test_decode_pads_a_clip_too_short_for_the_front_end(setup, tmp_path, capsys, monkeypatch):
    """50 ms (no encoder frame) is not an error for decode, as for transcribe: it is padded
    with silence and scored as what it decodes to, so the WER still counts its words."""
    clean, _, model = setup
    line, _ = make_bad(clean.parent, "too-short-to-decode")
    manifest = with_bad_lines(clean, "decode-tiny.jsonl", [line])
    out = tmp_path / "out"
    code, _, err = run_cli(["decode", "--checkpoint", model, "--manifest", manifest,
                            "--out-dir", out], capsys, monkeypatch)
    assert code == 0, err
    hyps = dict(x.split("\t") if "\t" in x else (x, "")
                for x in (out / "hyp.txt").read_text().splitlines())
    assert len(hyps) == 13 and "too-short-to-decode" in hyps
    assert json.loads((out / "summary.json").read_text())["utterances"] == 13


def bad_manifest(clean: Path, name: str, kinds: list[str]) -> tuple[Path, list[tuple]]:
    """``clean`` plus a line of each of ``kinds``; and the (manifest, line, kind) of each."""
    path = with_bad_lines(clean, name, [make_bad(clean.parent, k)[0] for k in kinds])
    return path, [(path, n, k) for n, k in enumerate(kinds, 13)]


def expect_skipped(folder: Path, expected: list[tuple], logged: str) -> None:
    """skipped.txt and the end-of-run listing name each bad line, and nothing else."""
    listed = (folder / "skipped.txt").read_text().splitlines()
    assert len(listed) == len(expected), listed
    for manifest, n, kind in expected:
        needle = make_bad(manifest.parent, kind)[1]
        assert any(needle in x and f"{manifest}:{n}" in x for x in listed), (kind, listed)
        assert any(needle in x for x in logged.splitlines()), (kind, logged)
    assert f"skipped {len(expected)} bad input(s) (--skip-bad), listed in {folder}" in logged


def test_train_skip_bad_skips_counts_and_lists(setup, tmp_path, capsys, monkeypatch, caplog):
    clean, config, _ = setup
    train, expected = bad_manifest(clean, "train-all.jsonl", TRAIN_KINDS)
    valid, expected_valid = bad_manifest(clean, "valid-all.jsonl", ["unencodable"])
    exp = tmp_path / "exp"
    code, _, err = run_cli(["train", "-c", config, "--train", train, "--valid", valid, "--exp-dir",
                            exp, "--set", "train.epochs=1", "--skip-bad"], capsys, monkeypatch)
    assert code == 0, err
    expect_skipped(exp, expected + expected_valid, caplog.text)
    assert (exp / "model.pt").exists()


def test_decode_skip_bad_skips_counts_and_lists(setup, tmp_path, capsys, monkeypatch, caplog):
    clean, _, model = setup
    manifest, expected = bad_manifest(clean, "decode-all.jsonl", DECODE_KINDS)
    out = tmp_path / "out"
    code, _, err = run_cli(["decode", "--checkpoint", model, "--manifest", manifest,
                            "--out-dir", out, "--skip-bad"], capsys, monkeypatch)
    assert code == 0, err
    expect_skipped(out, expected, caplog.text)
    hyp_ids = [x.split("\t")[0] for x in (out / "hyp.txt").read_text().splitlines()]
    assert hyp_ids == [f"utt{i:03d}" for i in range(12)]
    assert json.loads((out / "summary.json").read_text())["utterances"] == 12


def test_bad_files_in_dataloader_workers(setup, tmp_path, capsys, monkeypatch, caplog):
    """The same skips and the same one-line error when worker processes read the audio."""
    clean, config, model = setup
    manifest, expected = bad_manifest(clean, "workers.jsonl",
                                      ["corrupt", "nan", "truncated"])
    code, _, err = run_cli(["decode", "--checkpoint", model, "--manifest", manifest, "--out-dir",
                            tmp_path / "d", "--num-workers", "2", "--skip-bad"], capsys,
                           monkeypatch)
    assert code == 0, err
    expect_skipped(tmp_path / "d", expected, caplog.text)
    caplog.clear()
    code, _, err = run_cli(["train", "-c", config, "--train", manifest, "--valid", clean,
                            "--exp-dir", tmp_path / "e", "--set", "data.num_workers=2",
                            "--set", "train.epochs=1", "--skip-bad"], capsys, monkeypatch)
    assert code == 0, err
    expect_skipped(tmp_path / "e", expected, caplog.text)
    # in a subprocess, so that a hang would fail the test rather than block it
    r = subprocess.run([sys.executable, "-m", "ctcasr", "decode", "--checkpoint", model,
                        "--manifest", manifest, "--out-dir", tmp_path / "d2", "--num-workers", "2"],
                       capture_output=True, text=True, timeout=240,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    msg = one_error_line(r.stderr)
    assert r.returncode == 1 and "corrupt.wav: cannot decode audio" in msg and \
        f"{manifest}:13" in msg and "DataLoader worker" not in r.stderr \
        and "Traceback" not in r.stderr  # (on one core torch warns "This DataLoader will ...")


def test_stereo_and_other_sample_rates_are_handled(setup, tmp_path, capsys, monkeypatch):
    clean, config, model = setup
    folder = clean.parent
    x = 0.1 * np.sin(np.arange(8000) / 3)
    sf.write(folder / "stereo.flac", np.stack([x, -x / 2], 1), SR)
    sf.write(folder / "rate.wav", np.interp(np.arange(22050) / 22050, np.arange(8000) / 8000, x),
             22050)
    lines = [json.dumps({"id": n, "audio": a, "duration": 1.0, "text": "ab"})
             for n, a in (("stereo", "stereo.flac"), ("rate", "rate.wav"))]
    manifest = with_bad_lines(clean, "formats.jsonl", lines)
    code, _, err = run_cli(["train", "-c", config, "--train", manifest, "--valid", manifest,
                            "--exp-dir", tmp_path / "e", "--set", "train.epochs=1"],
                           capsys, monkeypatch)
    assert code == 0, err
    code, _, err = run_cli(["decode", "--checkpoint", model, "--manifest", manifest,
                            "--out-dir", tmp_path / "d"], capsys, monkeypatch)
    assert code == 0, err
    assert len((tmp_path / "d" / "hyp.txt").read_text().splitlines()) == 14


def test_config_and_checkpoint_errors_name_the_keys(setup, tmp_path, capsys, monkeypatch):
    clean, config, model = setup
    bad_cfg = tmp_path / "c.yaml"
    bad_cfg.write_text("train:\n  epochz: 3\n")
    code, _, err = run_cli(["train", "-c", bad_cfg, "--train", clean, "--valid", clean,
                            "--exp-dir", tmp_path / "e0"], capsys, monkeypatch)
    assert code == 1 and f"{bad_cfg}: unknown config key train.epochz" in one_error_line(err)
    # resuming a run with another model config names the keys that differ
    code, _, err = run_cli(["train", "-c", config, "--train", clean, "--valid", clean,
                            "--exp-dir", model.parent, "--resume",
                            "--set", "model.encoder_conf.hidden_size=8",
                            "--set", "data.features.num_mel_bins=20"], capsys, monkeypatch)
    msg = one_error_line(err)
    assert code == 1 and "last.pt: was trained with a different model config" in msg
    assert "model.encoder_conf.hidden_size" in msg and "data.features.num_mel_bins" in msg
    # averaging checkpoints of different models, likewise
    other = tmp_path / "e1"
    code, _, err = run_cli(["train", "-c", config, "--train", clean, "--valid", clean,
                            "--exp-dir", other, "--set", "train.epochs=1",
                            "--set", "model.frontend.dim=8"], capsys, monkeypatch)
    assert code == 0, err
    code, _, err = run_cli(["average", model, other / "model.pt", "-o", tmp_path / "avg.pt"],
                           capsys, monkeypatch)
    assert code == 1 and "mismatching keys: model.frontend.dim" in one_error_line(err)


def test_a_skip_bad_run_resumes_with_the_same_utterances(setup, tmp_path):
    clean, config, _ = setup
    manifest, _ = bad_manifest(clean, "resume.jsonl", ["corrupt", "empty-text", "nan"])

    def run(exp, *overrides, resume=False):
        cfg = load_config(config, ["train.epochs=2", *overrides])
        return train(cfg, manifest, manifest, tmp_path / exp, resume=resume, skip_bad=True)

    full = run("full")
    part = run("part", "train.max_steps=3")
    assert part.step == 3 and part.unreadable == full.unreadable and len(full.unreadable) == 4
    assert run("part", resume=True).step == full.step
    a, b = (load_checkpoint(tmp_path / e / "model.pt")["model"] for e in ("full", "part"))
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert (tmp_path / "part" / "skipped.txt").read_text() == \
        (tmp_path / "full" / "skipped.txt").read_text()
