import pytest
import torch

from ctcasr.config import ModelConfig
from ctcasr.errors import CtcasrError
from ctcasr.models import build_model
from ctcasr.models.frontend import Conv2dSubsampling, FrontendConfig
from ctcasr.models.mask import make_pad_mask
from ctcasr.models.rnn import RNNConfig, RNNEncoder, reverse_padded


def test_make_pad_mask_is_true_at_padding():
    m = make_pad_mask(torch.tensor([3, 1, 0]), 4)
    assert m.tolist() == [[False, False, False, True], [False, True, True, True], [True] * 4]


def test_reverse_padded_reverses_within_length_only():
    x = torch.arange(8.0).view(2, 4, 1)
    y = reverse_padded(x, torch.tensor([4, 2]))
    assert y.squeeze(-1).tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    assert torch.equal(reverse_padded(y, torch.tensor([4, 2])), x)


def model_for(encoder: str, impl: str = "reverse", subsampling: int = 4):
    torch.manual_seed(0)
    cfg = ModelConfig(
        frontend=FrontendConfig(subsampling=subsampling, channels=4, dim=12),
        encoder=encoder,
        encoder_conf=RNNConfig(hidden_size=10, num_layers=2, dropout=0.3, impl=impl),
    )
    return build_model(cfg, 9, 6, torch.randn(9), torch.rand(9) + 0.5).eval()


@pytest.mark.parametrize("encoder", ["lstm", "gru"])
@pytest.mark.parametrize("impl", ["reverse", "packed"])
@pytest.mark.parametrize("subsampling", [1, 4])
def test_padding_invariance(encoder, impl, subsampling):
    """An utterance alone gives the same log-probs as inside a padded batch."""
    model = model_for(encoder, impl, subsampling)
    lens = torch.tensor([37, 80, 20])
    x = torch.randn(3, 80, 9)
    x[0, 37:] = 1e3  # garbage in the padding must not matter
    x[2, 20:] = -1e3
    with torch.no_grad():
        batch_lp, out_lens = model(x, lens)
        for b in range(3):
            alone, alone_len = model(x[b : b + 1, : lens[b]], lens[b : b + 1])
            assert alone_len.item() == out_lens[b].item() == alone.shape[1]
            assert torch.allclose(batch_lp[b, : out_lens[b]], alone[0], atol=1e-5)
    assert torch.allclose(batch_lp.exp().sum(-1), torch.ones(()), atol=1e-4)


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_reverse_impl_equals_packed_impl(rnn):
    torch.manual_seed(0)
    packed = RNNEncoder(rnn, 5, RNNConfig(7, 2, 0.0, True, "packed"))
    rev = RNNEncoder(rnn, 5, RNNConfig(7, 2, 0.0, True, "reverse"))
    for i in range(2):
        for name, p in rev.forward_layers[i].named_parameters():
            p.data.copy_(getattr(packed.rnn, name.replace("_l0", f"_l{i}")))
        for name, p in rev.backward_layers[i].named_parameters():
            p.data.copy_(getattr(packed.rnn, name.replace("_l0", f"_l{i}") + "_reverse"))
    x, lens = torch.randn(3, 30, 5, requires_grad=True), torch.tensor([30, 12, 1])
    ya, _ = packed(x, lens)
    yb, _ = rev(x, lens)
    assert torch.allclose(ya, yb, atol=1e-6)
    assert (yb[1, 12:] == 0).all() and (yb[2, 1:] == 0).all()
    ga = torch.autograd.grad(ya.square().sum(), x)[0]
    gb = torch.autograd.grad(yb.square().sum(), x)[0]
    assert torch.allclose(ga, gb, atol=1e-5)


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_subsampling_length_formula_matches_output(factor):
    sub = Conv2dSubsampling(23, FrontendConfig(subsampling=factor, channels=2, dim=5))
    for t in range(1, 201):
        lens = torch.tensor([t])
        if t < sub.min_input_frames:
            assert sub.output_lengths(lens).item() < 1
            with pytest.raises(CtcasrError, match="too short"):
                sub(torch.randn(1, t, 23), lens)
            continue
        y, y_lens = sub(torch.randn(1, t, 23), lens)
        assert y.shape == (1, y_lens.item(), 5)
    assert sub.min_input_frames == {4: 7, 6: 11, 8: 15}[factor]
