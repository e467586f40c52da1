"""Issue 17, part 1: fine-tuning from a trained model (``ctcasr train --init CHECKPOINT``)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO, TINY_CONFIG
from test_reliability_kill import Replacements, Run

from ctcasr.checkpoint import load_checkpoint
from ctcasr.config import Config, load_config
from ctcasr.data.dataset import ASRDataset
from ctcasr.data.manifest import read_manifest
from ctcasr.errors import CtcasrError
from ctcasr.models import build_model
from ctcasr.tokenizer import CharTokenizer
from ctcasr.train.finetune import freezing_summary, frozen_parameters, init_from
from ctcasr.train.trainer import train, train_step


@pytest.fixture
def source(tiny_config, corpus, tmp_path):
    """A model trained on the corpus (characters), to fine-tune from."""
    cfg = load_config(tiny_config, ["train.epochs=1", "train.tensorboard=false"])
    train(cfg, corpus, corpus, tmp_path / "source")
    return tmp_path / "source" / "model.pt"


def fresh_model(raw: dict, vocab: int, seed: int = 5):
    torch.manual_seed(seed)
    cfg = Config.from_dict(raw)
    return build_model(cfg.model, 23, vocab, torch.full((23,), 2.0), torch.full((23,), 3.0))


@pytest.mark.parametrize("same_vocabulary", [True, False])
def test_matching_weights_are_loaded_and_the_head_only_for_the_same_vocabulary(source,
                                                                               same_vocabulary):
    src = load_checkpoint(source)
    raw = yaml.safe_load(TINY_CONFIG)
    vocab = src["vocab_size"] if same_vocabulary else src["vocab_size"] + 3
    model = fresh_model(raw, vocab)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from(model, src, same_vocabulary, source)
    after = model.state_dict()
    for name, value in after.items():
        if name.startswith(("frontend.", "encoder.")):
            assert torch.equal(value, src["model"][name]), name
            assert name in report.loaded
        elif name.startswith("cmvn."):  # this run's statistics, never the source's
            assert torch.equal(value, before[name]) and name not in report.loaded
        elif same_vocabulary:  # head kept
            assert torch.equal(value, src["model"][name]) and name in report.loaded
        else:  # head re-initialised: the fresh model's own initialisation
            assert torch.equal(value, before[name]) and name in report.reinitialised
    assert any("CMVN" in x for x in report.left_out)


def test_a_checkpoint_of_another_encoder_is_one_clear_error(source):
    raw = yaml.safe_load(TINY_CONFIG)
    raw["model"].update(encoder="conformer", encoder_conf={"d_model": 16, "num_layers": 1,
                                                           "num_heads": 2, "ffn_dim": 32})
    with pytest.raises(CtcasrError, match=r"model\.pt: nothing matches: none of its encoder "
                                          r"weights fit this model \(its encoder: lstm"):
        init_from(fresh_model(raw, 5), load_checkpoint(source), False, source)
    r = subprocess.run([sys.executable, "-m", "ctcasr", "train", "-c", "/dev/null", "--train",
                        "x.jsonl", "--valid", "x.jsonl", "--exp-dir", str(source.parent / "x"),
                        "--init", str(source.parent / "missing.pt")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and "missing.pt" in r.stderr


def test_frozen_parameters_do_not_move_and_the_others_do(tiny_config, corpus):
    cfg = load_config(tiny_config, ["train.freeze_frontend=true",
                                    "train.freeze_encoder_layers=1", "train.freeze_steps=2"])
    utts = read_manifest(corpus)
    tok = CharTokenizer.train(u.text for u in utts)
    ds = ASRDataset(utts, cfg.data.features, tok)
    batch = ds.collate([ds[i] for i in range(6)])
    model = fresh_model(yaml.safe_load(TINY_CONFIG), tok.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    names = {p: n for n, p in model.named_parameters()}
    for step in range(3):
        frozen = frozen_parameters(model, cfg.train, step)
        assert sorted(names[p].split(".")[0] + (names[p].split(".")[2] if "layers" in names[p]
                                                 else "") for p in frozen) == \
            (sorted(["frontend"] * 6 + ["encoder0"] * 8) if step < 2 else [])
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        train_step(model, opt, [batch], len(batch), 5.0, frozen=frozen)
        for n, p in model.named_parameters():
            held = any(p is q for q in frozen)
            assert torch.equal(p, before[n]) == held, (step, n)


def test_freezing_more_layers_than_the_encoder_has_is_an_error_and_the_rest_is_logged(
        tiny_config, corpus):
    model = fresh_model(yaml.safe_load(TINY_CONFIG), 10)  # a BiLSTM of 2 layers
    cfg = load_config(tiny_config, ["train.freeze_encoder_layers=3", "train.freeze_steps=5"])
    with pytest.raises(CtcasrError, match="freeze_encoder_layers: 3, but this model's encoder "
                                          "has 2 layer"):
        freezing_summary(model, cfg.train, 100)
    cfg = load_config(tiny_config, ["train.freeze_encoder_layers=2", "train.freeze_steps=500"])
    assert freezing_summary(model, cfg.train, 100) == (
        "held still for the whole run: 16 tensor(s): encoder.forward_layers.0 (4), "
        "encoder.forward_layers.1 (4), encoder.backward_layers.0 (4), "
        "encoder.backward_layers.1 (4)")
    cfg = load_config(tiny_config, ["train.freeze_frontend=true", "train.freeze_steps=5"])
    assert freezing_summary(model, cfg.train, 100) == \
        "held still for the first 5 of 100 optimizer steps: 6 tensor(s): frontend (6)"
    assert freezing_summary(model, load_config(tiny_config, []).train, 100) == ""


def fine_tune_config(tmp_path, source):
    raw = yaml.safe_load(TINY_CONFIG)
    raw["train"].update(init=str(source), freeze_frontend=True, freeze_steps=4)
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_fine_tuned_run_logs_what_it_loaded(source, corpus, tmp_path, caplog):
    cfg = load_config(fine_tune_config(tmp_path, source), ["train.epochs=1",
                                                           "tokenizer.type=word"])
    with caplog.at_level(logging.INFO, "ctcasr"):
        steps = train(cfg, corpus, corpus, tmp_path / "ft").step
    text = caplog.text
    assert f"init from {source}:" in text and "loaded 22 tensor(s): frontend (6), " \
        "encoder.forward_layers.0 (4), encoder.forward_layers.1 (4), " \
        "encoder.backward_layers.0 (4), encoder.backward_layers.1 (4)\n" in text
    assert "re-initialised: head.weight, head.bias" in text  # words, not characters
    when = "for the whole run" if steps <= 4 else f"for the first 4 of {steps} optimizer steps"
    assert f"held still {when}: 6 tensor(s): frontend (6)\n" in text
    assert "CMVN statistics: computed on this run's training data" in text
    caplog.clear()
    cfg = load_config(fine_tune_config(tmp_path, source), ["train.epochs=1",
                                                           "train.init_tokenizer=true"])
    with caplog.at_level(logging.INFO, "ctcasr"):
        train(cfg, corpus, corpus, tmp_path / "ft_same")
    assert "loaded 24 tensor(s)" in caplog.text and "re-initialised: nothing" in caplog.text
    assert "other features" not in caplog.text
    caplog.clear()  # features the source's weights were not trained on: one warning names them
    cfg = load_config(fine_tune_config(tmp_path, source), [
        "train.epochs=1", "train.init_tokenizer=true", "data.features.utterance_cmn=true",
        "data.features.sample_rate=16000"])
    with caplog.at_level(logging.INFO, "ctcasr"):
        train(cfg, corpus, corpus, tmp_path / "ft_other_features")
    assert f"{source} was trained on other features: sample_rate 8000 (this run: 16000), " \
        "utterance_cmn False (this run: True)" in caplog.text


def test_kill_9_and_resume_of_a_fine_tuned_run_is_bitwise_the_uninterrupted_one(source, corpus,
                                                                              tmp_path):
    config = fine_tune_config(tmp_path, source)
    ref_exp, exp = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = Run(config, corpus, ref_exp, resume=False)
    run = Run(config, corpus, exp, resume=False)
    try:
        saves = Replacements(exp / "last.pt")
        run.kill_when(lambda: saves.at_least(3), "after 3 steps (inside the frozen ones)")
        err = Run(config, corpus, exp, resume=True).finish()
        assert "resumed from" in err
        reference.finish()
    finally:
        reference.kill()
        run.kill()
    a, b = load_checkpoint(ref_exp / "last.pt")["model"], load_checkpoint(exp / "last.pt")["model"]
    src = load_checkpoint(source)["model"]
    for k, v in a.items():
        assert torch.equal(v, b[k]), k
    assert not torch.equal(a["frontend.proj.weight"], src["frontend.proj.weight"])  # released


@pytest.mark.parametrize("english, digits, unit, vocab, dropped", [
    # make digits: the 3-epoch character model
    ("egs/speechocean/conf/lstm_short.yaml", "egs/digits/conf/lstm16k_ft.yaml", "char", 29, []),
    # make digits-transfer: make speechocean's phone + SC-CTC model; the digits model keeps its
    # phones (the init's tokenizer) and its head, not the SC-CTC feedback layer
    ("egs/speechocean/conf/lstm_phone.yaml", "egs/digits/conf/lstm16k_ft.yaml", "phone", 79,
     ["condition.weight", "condition.bias"]),
])
def test_the_digits_recipes_fine_tune_every_tensor_of_their_english_model(english, digits, unit,
                                                                        vocab, dropped):
    """`make digits` and `make digits-transfer` fine-tune the digits config from a speechocean
    one: features and network must agree, or --init would start layers afresh (and log it)
    instead of failing; the init's tokenizer is kept (run.sh --init-tokenizer true)."""
    src_cfg, cfg = load_config(REPO / english), load_config(REPO / digits)
    assert src_cfg.data.features == cfg.data.features
    assert src_cfg.tokenizer.type == unit
    dim = cfg.data.features.num_mel_bins
    torch.manual_seed(0)
    src = build_model(src_cfg.model, dim, vocab, torch.zeros(dim), torch.ones(dim))
    model = build_model(cfg.model, dim, vocab, torch.zeros(dim), torch.ones(dim))
    report = init_from(model, {"model": src.state_dict()}, True, REPO / english)
    names = [n for n in src.state_dict() if not n.startswith("cmvn.") and n not in dropped]
    assert report.loaded == names and report.reinitialised == []
    assert "head.weight" in names and any(n.startswith("encoder.") for n in names)
    assert [s.split(" ")[0] for s in report.left_out] == ["cmvn.mean", "cmvn.istd", *dropped]
    for name in names:
        assert torch.equal(model.state_dict()[name], src.state_dict()[name]), name
