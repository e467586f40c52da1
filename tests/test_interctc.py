"""Intermediate CTC (and its self-conditioned form) on every encoder: the extra outputs are the
CTC head on the named layers' outputs, nothing of it runs when not asked (decoding, exports), the
loss reaches only the layers below, padding stays out, and training with it runs and resumes."""

from __future__ import annotations

import json

import pytest
import torch
from test_models import encoder_conf
from test_train import run_train

from ctcasr.config import FrontendConfig, ModelConfig, RNNConfig
from ctcasr.errors import CtcasrError
from ctcasr.models import build_model

ENCODERS = ["lstm", "gru", "conformer", "transformer", "ebranchformer"]


def model(encoder: str, layers=(1, 2), condition=False, num_layers=3, seed=0):
    torch.manual_seed(seed)
    conf = encoder_conf(encoder, dropout=0.0)
    conf = type(conf)(**{**conf.__dict__, "num_layers": num_layers})
    cfg = ModelConfig(frontend=FrontendConfig(subsampling=4, channels=4, dim=12), encoder=encoder,
                      encoder_conf=conf, inter_ctc_layers=layers, inter_ctc_condition=condition)
    return build_model(cfg, 9, 6, torch.randn(9), torch.rand(9) + 0.5).eval()


def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 60, 9, generator=g)
    return x, torch.tensor([60, 33, 17])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_inter_outputs_cost_nothing_unless_asked(encoder):
    plain, inter = model(encoder, layers=()), model(encoder)
    inter.load_state_dict(plain.state_dict())  # the same weights: no new parameters
    x, lens = batch()
    with torch.no_grad():
        want, want_lens = plain(x, lens)
        got, got_lens = inter(x, lens)
        lp, lp_lens, lower = inter.outputs(x, lens, intermediate=True)
    assert torch.equal(got, want) and torch.equal(lp, want) and torch.equal(got_lens, want_lens)
    assert len(lower) == 2 and all(t.shape == want.shape for t in lower)
    for t in lower:  # log-probabilities over the vocabulary, and not the last layer's
        assert torch.allclose(t.logsumexp(-1), torch.zeros(()), atol=1e-5)
        assert (t - want).abs().max() > 1e-3


@pytest.mark.parametrize("encoder", ENCODERS)
def test_inter_loss_trains_only_the_layers_below(encoder):
    """The CTC head on layer 1's output: its gradient reaches layer 1 and not layers 2 and 3
    (the head is shared, so it gets one too)."""
    m = model(encoder, layers=(1,)).train()
    x, lens = batch()
    _, out_lens, (lp,) = m.outputs(x, lens, intermediate=True)
    tokens = torch.tensor([[1, 2, 3], [2, 3, 0], [4, 0, 0]])
    torch.nn.functional.ctc_loss(lp.transpose(0, 1), tokens, out_lens,
                                 torch.tensor([3, 2, 1])).backward()
    enc = m.encoder
    layers = list(enc.layers) if hasattr(enc, "layers") else \
        [torch.nn.ModuleList([f, b]) for f, b in zip(enc.forward_layers, enc.backward_layers,
                                                      strict=True)]

    def reached(module):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    assert reached(layers[0]) and reached(m.head) and reached(m.frontend)
    assert not reached(layers[1]) and not reached(layers[2])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_self_conditioning_feeds_back_and_keeps_padding_out(encoder):
    m = model(encoder, condition=True)
    plain = model(encoder, layers=())
    x, lens = batch()
    x[1, 33:] = 1e3  # garbage in the padding
    with torch.no_grad():
        lp, out_lens, lower = m.outputs(x, lens, intermediate=True)
        assert (m(x, lens)[0] - plain(x, lens)[0]).abs().max() > 1e-3  # conditioned, always
        for b in range(3):  # an utterance alone = inside the padded batch, every output
            n = int(lens[b])
            alone, _, alone_lower = m.outputs(x[b : b + 1, :n], lens[b : b + 1], intermediate=True)
            t = int(out_lens[b])
            assert (alone[0] - lp[b, :t]).abs().max() < 1e-5
            for a, full in zip(alone_lower, lower, strict=True):
                assert (a[0] - full[b, :t]).abs().max() < 1e-5


def test_config_errors():
    with pytest.raises(CtcasrError, match=r"inter_ctc_layers: \[3\]: each must be a layer "
                                          r"below the last \(1 to 2 for this 3-layer encoder\)"):
        model("lstm", layers=(3,))
    with pytest.raises(CtcasrError, match="inter_ctc_layers: \\[0\\]"):
        model("conformer", layers=(0,))
    with pytest.raises(CtcasrError, match="inter_ctc_condition needs model.inter_ctc_layers"):
        model("lstm", layers=(), condition=True)
    with pytest.raises(CtcasrError, match="impl: reverse, not packed"):
        build_model(ModelConfig(encoder_conf=RNNConfig(8, 3, impl="packed"),
                                inter_ctc_layers=(1,)), 9, 6, torch.zeros(9), torch.ones(9))


def test_training_with_self_conditioned_inter_ctc_resumes_exactly(tiny_config, corpus, tmp_path):
    opts = ["model.inter_ctc_layers=[1]", "model.inter_ctc_condition=true",
            "train.inter_ctc_weight=0.5", "train.epochs=2", "train.num_threads=1"]
    run_train(tiny_config, corpus, tmp_path / "a", opts)
    run_train(tiny_config, corpus, tmp_path / "b", [*opts, "train.epochs=1"])
    run_train(tiny_config, corpus, tmp_path / "b", opts, resume=True)
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=False)["model"] for d in "ab")
    assert "condition.weight" in a and all(torch.equal(a[k], b[k]) for k in a)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "a" / "train_log.jsonl").open()
              if '"loss"' in x and '"step"' in x]
    assert losses and all(v == v and v > 0 for v in losses)


def test_self_conditioned_model_exports(tmp_path):
    """The conditioning is part of the model (decoding uses it): the export carries it."""
    pytest.importorskip("onnxruntime")
    from test_transcribe import make_checkpoint

    from ctcasr.infer.export import export

    ckpt = make_checkpoint(tmp_path / "m.pt", "lstm",
                           model_extra={"inter_ctc_layers": [1], "inter_ctc_condition": True})
    out, diff = export(ckpt)
    assert out.is_file() and diff < 1e-4
