"""Consistency-regularised CTC: two differently masked copies of each utterance, their CTC losses
averaged, plus a KL term between their frame posteriors (each copy the other's detached target).
The term's values against a hand-written loop, zero for identical copies, padding left out,
gradients into both copies; the augmenter's two views; the batch layout; the model's loss; and
training with it that resumes exactly and equals itself under DDP."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY_CONFIG, make_corpus
from test_interctc import model as make_model
from test_train import run_train

from ctcasr.checkpoint import load_checkpoint
from ctcasr.config import AugmentConfig, FbankConfig
from ctcasr.data.augment import Augmenter
from ctcasr.data.dataset import ASRDataset
from ctcasr.data.manifest import read_manifest
from ctcasr.errors import CtcasrError
from ctcasr.models.ctc import consistency
from ctcasr.tokenizer import CharTokenizer

TINY_FEATS = FbankConfig(sample_rate=8000, num_mel_bins=23)
CR = ["train.cr_ctc_weight=0.2", "data.augment.time_masks=1", "data.augment.freq_masks=1",
      "data.augment.time_mask_width=4", "data.augment.freq_mask_width=4"]


def log_probs(b=3, t=7, v=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, v, generator=g).log_softmax(-1)


def test_consistency_against_a_loop():
    lp = log_probs(4)  # two utterances, two copies each: rows b and 2 + b
    lens = torch.tensor([7, 4, 5, 4])
    got = consistency(lp, lens)
    want = []
    for b in range(2):
        total = 0.0
        for me, other in ((b, 2 + b), (2 + b, b)):
            for t in range(int(lens[me])):
                p = lp[other, t].exp()
                total += float((p * (lp[other, t] - lp[me, t])).sum())
        want.append(total / 2)
    assert got.shape == (2,)
    assert torch.allclose(got, torch.tensor(want), atol=1e-5)
    assert (got > 0).all()


def test_consistency_is_zero_for_identical_copies_and_ignores_padding():
    lp = log_probs(2)
    lens = torch.tensor([3, 6])
    same = torch.cat([lp, lp])
    assert torch.equal(consistency(same, torch.cat([lens, lens])), torch.zeros(2))
    pair = torch.cat([lp, log_probs(2, seed=1)])
    before = consistency(pair, torch.cat([lens, lens]))
    garbage = pair.clone()
    garbage[0, 3:] = log_probs(1, 4, seed=5)[0]  # utterance 0 is 3 frames long
    garbage[2, 3:] = 0.0
    assert torch.equal(consistency(garbage, torch.cat([lens, lens])), before)


def test_consistency_gradient_reaches_both_copies_and_not_through_the_targets():
    logits = torch.randn(4, 6, 5, requires_grad=True)
    consistency(logits.log_softmax(-1), torch.full((4,), 6)).sum().backward()
    g = logits.grad
    assert g[:2].abs().sum() > 0 and g[2:].abs().sum() > 0
    # with the target detached, each copy's logit gradient is (q - p) / 2: its own posterior
    # minus the other's (the 1/2: the mean over the two copies)
    p = logits.detach().softmax(-1)
    other = torch.cat([p[2:], p[:2]])
    assert torch.allclose(g, (p - other) / 2, atol=1e-6)


def test_augmenter_makes_two_different_views_with_more_time_masks():
    cfg = AugmentConfig(freq_masks=1, freq_mask_width=5, time_masks=2, time_mask_width=10,
                        time_mask_ratio=1.0, cr_time_masks_factor=2.5)
    feats = torch.rand(200, 20) + 1.0  # masks write 0: a 0 is a masked value
    one, two = Augmenter(cfg, 16000, 3), Augmenter(cfg, 16000, 3, views=2)
    single = one.spec_augment(feats, 0, 4)
    views = two.spec_augment(feats, 0, 4)
    assert single.shape == (200, 20) and views.shape == (2, 200, 20)
    assert not torch.equal(views[0], views[1])
    assert torch.equal(views, two.spec_augment(feats, 0, 4))  # a pure function: resume
    for v in views:  # whatever is not masked is the input
        kept = v != 0
        assert torch.equal(v[kept], feats[kept])

    def masked_frames(x):
        return int((x == 0).all(1).sum())

    n = 200  # 5 time masks each (2 x 2.5) mask more frames than 2, over many draws
    more = sum(masked_frames(two.spec_augment(feats, 0, i)[0]) for i in range(n))
    fewer = sum(masked_frames(one.spec_augment(feats, 0, i)) for i in range(n))
    assert more > 2 * fewer
    # before spec_start_epoch, no masks: two equal copies of the input
    late = Augmenter(AugmentConfig(time_masks=2, spec_start_epoch=3), 16000, 3, views=2)
    assert torch.equal(late.spec_augment(feats, 0, 1), torch.stack([feats, feats]))


def test_collate_puts_views_one_after_the_other(tmp_path):
    manifest = make_corpus(tmp_path / "c", n=3)
    utts = read_manifest(manifest)
    tok = CharTokenizer.train([u.text for u in utts])
    aug = Augmenter(AugmentConfig(time_masks=1, time_mask_width=5), 8000, 0, views=2)
    ds = ASRDataset(utts, TINY_FEATS, tok, augmenter=aug)
    batch = ds.collate([ds[0, 0], ds[0, 2]])
    t0, t2 = ds.features(0).shape[0], ds.features(2).shape[0]
    assert batch.views == 2 and len(batch) == 2 and batch.ids == ["utt000", "utt002"]
    assert batch.feats.shape[0] == 4 and batch.feat_lens.tolist() == [t0, t2, t0, t2]
    assert batch.tokens.shape[0] == 2
    assert torch.equal(batch.feats[0, :t0], ds[0, 0][1][0])
    assert torch.equal(batch.feats[2, :t0], ds[0, 0][1][1])
    assert batch.to("cpu").views == 2


def test_model_loss_with_two_copies():
    m = make_model("lstm", layers=(1,))  # eval: no dropout
    g = torch.Generator().manual_seed(2)
    x, lens = torch.randn(2, 40, 9, generator=g), torch.tensor([40, 29])
    tokens, token_lens = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    one = m(x, lens, tokens, token_lens, 0.3)
    # the same copy twice: the mean of two equal losses, and no consistency term
    two = m(torch.cat([x, x]), torch.cat([lens, lens]), tokens, token_lens, 0.3, 0.2)
    assert two.loss.shape == (2,) and torch.allclose(two.loss, one.loss, atol=1e-5)
    assert two.infeasible.shape == (2,)
    # different copies: the mean of their losses + weight x the consistency term
    y = x + 0.3 * torch.randn(x.shape, generator=g)
    other = m(y, lens, tokens, token_lens, 0.3)
    both = m(torch.cat([x, y]), torch.cat([lens, lens]), tokens, token_lens, 0.3, 0.2)
    term = consistency(both.log_probs, both.out_lens)
    assert (term > 0).all()
    assert torch.allclose(both.loss, (one.loss + other.loss) / 2 + 0.2 * term, atol=1e-4)
    with pytest.raises(CtcasrError, match="6 inputs for 2 transcripts"):
        m(torch.cat([x, x, x]), torch.cat([lens, lens, lens]), tokens, token_lens)


def test_config_errors():
    from ctcasr.config import TrainConfig

    with pytest.raises(CtcasrError, match="train.cr_ctc_weight: -0.1"):
        TrainConfig(cr_ctc_weight=-0.1)
    with pytest.raises(CtcasrError, match="cr_time_masks_factor: -1"):
        AugmentConfig(cr_time_masks_factor=-1)


def test_training_with_cr_ctc_resumes_exactly(tiny_config, corpus, tmp_path):
    opts = [*CR, "model.inter_ctc_layers=[1]", "train.epochs=2"]
    full = run_train(tiny_config, corpus, tmp_path / "a", opts)
    run_train(tiny_config, corpus, tmp_path / "b", [*opts, f"train.max_steps={full.step - 2}"])
    run_train(tiny_config, corpus, tmp_path / "b", opts, resume=True)
    a, b = (load_checkpoint(tmp_path / d / "last.pt")["model"] for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = run_train(tiny_config, corpus, tmp_path / "p", [*CR[1:], "train.epochs=2"])
    assert plain.step == full.step  # the copies are not counted as more utterances
    c = load_checkpoint(tmp_path / "p" / "last.pt")["model"]
    assert any(not torch.equal(a[k], c[k]) for k in a)  # and the term did train


def test_ddp_with_cr_ctc_equals_one_process_accumulating(tmp_path):
    """The two copies stay inside each process's batch: 2 gloo processes train to the weights
    of 1 process accumulating 2 batches (dropout off, masks on)."""
    from test_ddp import NO_DROPOUT, assert_same_training, sets, torchrun

    run = torchrun()
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    manifest = str(make_corpus(tmp_path / "corpus"))
    args = ["train", "-c", str(config), "--train", manifest, "--valid", manifest]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "ctcasr", *args, "--exp-dir", str(tmp_path / "1"),
                          *sets([*NO_DROPOUT, *CR, "train.accum_grad=2"])],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([*run, "--standalone", "--nproc_per_node=2", "-m", "ctcasr", *args,
                          "--exp-dir", str(tmp_path / "2"), *sets([*NO_DROPOUT, *CR])],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_training(tmp_path / "2", load_checkpoint(tmp_path / "1" / "last.pt"))
