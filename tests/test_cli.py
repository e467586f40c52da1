"""The command line: a smoke run through a real subprocess and the bad-input table."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ctcasr.cli import main


def run_cli(args, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ctcasr", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_and_decode_smoke(tiny_config, corpus, tmp_path):
    exp, out = tmp_path / "exp", tmp_path / "dec"
    cmd = [sys.executable, "-m", "ctcasr"]
    r = subprocess.run([*cmd, "train", "-c", tiny_config, "--train", corpus, "--valid", corpus,
                        "--exp-dir", exp, "--set", "train.epochs=1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (exp / "model.pt").exists()
    r = subprocess.run([*cmd, "decode", "--checkpoint", exp / "model.pt", "--manifest", corpus,
                        "--out-dir", out], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "WER" in r.stdout
    hyp_ids = [line.split("\t")[0] for line in (out / "hyp.txt").read_text().splitlines()]
    assert hyp_ids == [json.loads(x)["id"] for x in corpus.read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["utterances"] == 12 and 0 <= summary["wer"]
    # beam search with a word LM trained on the transcripts, N-best and word times
    lm = tmp_path / "lm.arpa"
    r = subprocess.run([*cmd, "lm", "--manifest", corpus, "--order", "2", "--out", lm],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "2-grams" in r.stdout and lm.read_text().startswith("\\data\\")
    beam = tmp_path / "beam"
    r = subprocess.run([*cmd, "decode", "--checkpoint", exp / "model.pt", "--manifest", corpus,
                        "--out-dir", beam, "--decoder", "beam", "--beam-size", "4", "--nbest", "3",
                        "--lm", lm, "--lm-weight", "0.3", "--timestamps"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    nbest = [line.split("\t") for line in (beam / "nbest.txt").read_text().splitlines()]
    assert {n[0] for n in nbest} == set(hyp_ids) and all(n[1] in "123" for n in nbest)
    assert (beam / "words.ctm").exists() and (beam / "summary.json").exists()
    # closed vocabulary: an infinite OOV penalty lets only the LM's words through
    closed = tmp_path / "closed"
    r = subprocess.run([*cmd, "decode", "--checkpoint", exp / "model.pt", "--manifest", corpus,
                        "--out-dir", closed, "--decoder", "beam", "--lm", lm,
                        "--unk-penalty=-inf"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    known = {w for x in corpus.read_text().splitlines() for w in json.loads(x)["text"].split()}
    said = {w for line in (closed / "hyp.txt").read_text().splitlines()
            for w in line.split("\t")[1].split()}
    assert said <= known
    r = subprocess.run([*cmd, "decode", "--checkpoint", exp / "model.pt", "--manifest", corpus,
                        "--out-dir", closed, "--decoder", "beam", "--lm", lm,
                        "--unk-penalty", "2"], capture_output=True, text=True)
    assert r.returncode != 0 and "unk penalty 2.0: need a value <= 0" in r.stderr


def test_help_describes_every_option(capsys, monkeypatch):
    for verb in ("train", "decode", "score", "lm", "average", "plot"):
        code, out, _ = run_cli([verb, "--help"], capsys, monkeypatch)
        assert code == 0
        for line in out.splitlines():
            if line.strip().startswith("│ ") and "--" in line.split()[1]:
                assert len(line.split("  ")) > 2, f"{verb}: option without help: {line}"


def break_manifest(corpus, kind):
    lines = [json.loads(x) for x in corpus.read_text().splitlines()]
    folder = corpus.parent
    if kind == "missing":
        lines[2]["audio"] = "nope.wav"
    elif kind == "corrupt":
        (folder / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
        lines[2]["audio"] = "bad.wav"
    elif kind == "empty-audio":
        sf.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), 8000)
        lines[2]["audio"] = "empty.wav"
    elif kind == "empty-text":
        lines[2]["text"] = ""
    elif kind == "unencodable":
        lines[2]["text"] = "ab Q"
    text = "".join(json.dumps(x) + "\n" for x in lines)
    if kind == "not-json":
        text += "{oops\n"
    elif kind == "missing-key":
        text += '{"id": "z", "audio": "utt000.wav", "duration": 1.0}\n'
    bad = folder / f"{kind}.jsonl"
    bad.write_text(text)
    return bad


@pytest.mark.parametrize("kind, needle", [
    ("missing", "nope.wav: audio file not found"),
    ("corrupt", "bad.wav: cannot decode audio"),
    ("empty-audio", "empty.wav: audio has zero samples"),
    ("empty-text", ":3: empty transcript"),
    ("unencodable", ":3: utterance 'utt002': character 'Q'"),
    ("not-json", ":13: not valid JSON"),
    ("missing-key", ":13: missing key(s) text"),
])
def test_bad_input_gives_one_line_error(kind, needle, tiny_config, corpus, tmp_path,
                                        capsys, monkeypatch):
    bad = break_manifest(corpus, kind)
    # the unencodable character is only in the validation set: the tokenizer never saw it
    train_m = corpus if kind == "unencodable" else bad
    code, _, err = run_cli(["train", "-c", tiny_config, "--train", train_m, "--valid", bad,
                            "--exp-dir", tmp_path / "exp"], capsys, monkeypatch)
    assert code == 1
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_unknown_config_key_and_bad_checkpoint(tmp_path, corpus, capsys, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochz: 3\n")
    code, _, err = run_cli(["train", "-c", cfg, "--train", corpus, "--valid", corpus,
                            "--exp-dir", tmp_path / "e"], capsys, monkeypatch)
    assert code == 1 and "unknown config key train.epochz" in err and str(cfg) in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, _, err = run_cli(["decode", "--checkpoint", tmp_path / "junk.pt", "--manifest", corpus,
                            "--out-dir", tmp_path / "d"], capsys, monkeypatch)
    assert code == 1 and "junk.pt: not a readable checkpoint" in err and "Traceback" not in err


def test_score_verb(tmp_path, capsys, monkeypatch):
    (tmp_path / "ref").write_text("a\tyes no\nb\tno\n")
    (tmp_path / "hyp").write_text("b\tno\na\tyes yes\n")
    code, out, _ = run_cli(["score", tmp_path / "ref", tmp_path / "hyp"], capsys, monkeypatch)
    assert code == 0 and "WER 33.33 % [ 1 / 3" in out


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    import torch

    from ctcasr.checkpoint import load_checkpoint, save_checkpoint
    from ctcasr.errors import CtcasrError

    torch.save({"format": 1, "model": {}, "evil": print}, tmp_path / "x.pt")
    with pytest.raises(CtcasrError, match="x.pt: refused to load"):
        load_checkpoint(tmp_path / "x.pt")
    save_checkpoint({"model": {"w": torch.ones(2)}}, tmp_path / "ok.pt")
    assert torch.equal(load_checkpoint(tmp_path / "ok.pt")["model"]["w"], torch.ones(2))
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_file_inside_a_worker_process_gives_the_same_line(tiny_config, corpus, tmp_path,
                                                              capsys, monkeypatch):
    bad = break_manifest(corpus, "corrupt")
    code, _, err = run_cli(["train", "-c", tiny_config, "--train", bad, "--valid", bad,
                            "--exp-dir", tmp_path / "exp", "--set", "data.num_workers=1"],
                           capsys, monkeypatch)
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {corpus.parent / 'bad.wav'}: cannot decode audio")
    assert "Traceback" not in err and "DataLoader worker" not in err


def test_tokenizer_verb_writes_the_file_train_uses(tiny_config, corpus, tmp_path, capsys,
                                                   monkeypatch):
    import torch

    from ctcasr.tokenizer import load_tokenizer

    lines = corpus.read_text().splitlines()
    first = json.loads(lines[0])  # 1 word, 0.45 s: 9 output frames at x4
    lines.append(json.dumps({**first, "id": "crowded", "text": " ".join(["ab"] * 8)}))
    manifest = tmp_path / "with_crowded.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    tok_file = tmp_path / "tok.json"
    code, out, err = run_cli(["tokenizer", "-c", tiny_config, "--manifest", manifest,
                              "--out", tok_file], capsys, monkeypatch)
    assert code == 0, err
    assert f"wrote {tok_file}: char, 4 pieces, from 13 transcripts" in out  # blank ▁ a b
    assert "more tokens than output frames (CTC cannot align them): 1 at speed 1\n" in out
    pieces = json.loads(tok_file.read_text())["pieces"]
    assert sorted(pieces) == sorted(["<blank>", "▁", "a", "b"])

    exp = tmp_path / "exp"
    code, out, err = run_cli(["train", "-c", tiny_config, "--train", corpus, "--valid", corpus,
                              "--exp-dir", exp, "--set", "train.epochs=1",
                              "--set", f"tokenizer.path={tok_file}"], capsys, monkeypatch)
    assert code == 0, err
    state = torch.load(exp / "model.pt", weights_only=True)["tokenizer"]
    assert state["chars"] == load_tokenizer(tok_file).state_dict()["chars"]

    code, out, err = run_cli(["train", "-c", tiny_config, "--train", corpus, "--valid", corpus,
                              "--exp-dir", tmp_path / "exp2", "--set", "tokenizer.type=bpe",
                              "--set", "tokenizer.vocab_size=8",
                              "--set", f"tokenizer.path={tok_file}"], capsys, monkeypatch)
    assert code == 1
    assert "holds a char tokenizer of vocab_size 0, but the config says bpe of vocab_size 8" in err


def test_decode_verbs_state_the_library_defaults():
    """Unset decoding options fall back to what the model carries, else to `DecodeOptions`'
    defaults: the help of `decode` / `transcribe` / `serve` states those (spelled out so that
    `--help` does not import torch)."""
    import dataclasses
    import inspect
    import typing

    from ctcasr import cli
    from ctcasr.decode import DecodeOptions

    lib = {f.name: f.default for f in dataclasses.fields(DecodeOptions)}
    flags = {"beam": "beam", "prune": "prune", "beam_prune": "beam_prune", "topk": "topk",
             "lm_weight": "lm_weight", "word_bonus": "word_bonus", "unk_penalty": "unk_penalty"}
    checked = 0
    for verb in (cli.decode, cli.transcribe, cli.serve):
        params = inspect.signature(verb).parameters
        hints = typing.get_type_hints(verb, include_extras=True)
        for name, field in flags.items():
            if name not in params:
                continue
            assert params[name].default is None, (verb.__name__, name)
            help_text = typing.get_args(hints[name])[1].help
            assert help_text.endswith(f"else {lib[field]:g}."), (verb.__name__, name, help_text)
            checked += 1
    assert checked == 7 + 7 + 4
