import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctcasr.config import (
    Config,
    ConformerConfig,
    EBranchformerConfig,
    ModelConfig,
    RNNConfig,
    TransformerConfig,
)
from ctcasr.errors import CtcasrError
from ctcasr.models import build_model, transformer
from ctcasr.models.ctc import ctc_loss
from ctcasr.models.frontend import Conv2dSubsampling, FrontendConfig
from ctcasr.models.init import init_weights
from ctcasr.models.mask import make_attn_mask, make_pad_mask
from ctcasr.models.rnn import RNNEncoder, reverse_padded
from ctcasr.models.transformer import apply_rotary, rotary


def test_make_pad_mask_is_true_at_padding():
    m = make_pad_mask(torch.tensor([3, 1, 0]), 4)
    assert m.tolist() == [[False, False, False, True], [False, True, True, True], [True] * 4]


def test_reverse_padded_reverses_within_length_only():
    x = torch.arange(8.0).view(2, 4, 1)
    y = reverse_padded(x, torch.tensor([4, 2]))
    assert y.squeeze(-1).tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    assert torch.equal(reverse_padded(y, torch.tensor([4, 2])), x)


def test_make_attn_mask_is_true_at_real_keys():
    m = make_attn_mask(torch.tensor([3, 1]), 4)
    assert m.shape == (2, 1, 1, 4)
    assert m[:, 0, 0].tolist() == [[True, True, True, False], [True, False, False, False]]


def encoder_conf(encoder: str, variant: str = "", dropout: float = 0.3, size: int = 16):
    """A tiny config; ``variant`` is the RNN ``impl`` or the attention ``pos_enc``."""
    if encoder in ("lstm", "gru"):
        return RNNConfig(hidden_size=size, num_layers=2, dropout=dropout, impl=variant or "reverse")
    conf = dict(d_model=size, num_layers=2, num_heads=2, ffn_dim=2 * size, dropout=dropout,
                attention_dropout=dropout, pos_enc=variant or "rotary")
    if encoder == "conformer":
        return ConformerConfig(conv_kernel=5, **conf)
    if encoder == "ebranchformer":
        return EBranchformerConfig(conv_kernel=5, cgmlp_dim=2 * size, **conf)
    return TransformerConfig(**conf)


def model_for(encoder: str, variant: str = "", subsampling: int = 4, init: str = "default",
              seed: int = 0, dropout: float = 0.3):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        frontend=FrontendConfig(subsampling=subsampling, channels=4, dim=12),
        encoder=encoder,
        encoder_conf=encoder_conf(encoder, variant, dropout),
        init=init,
    )
    return build_model(cfg, 9, 6, torch.randn(9), torch.rand(9) + 0.5).eval()


VARIANTS = [
    ("lstm", "reverse"), ("lstm", "packed"), ("gru", "reverse"), ("gru", "packed"),
    ("conformer", "rotary"), ("conformer", "abs"), ("conformer", "none"),
    ("transformer", "rotary"), ("transformer", "abs"), ("ebranchformer", "rotary"),
    ("ebranchformer", "abs"),
]
ATTENTION = ("conformer", "transformer", "ebranchformer")
ATTENTION_VARIANTS = [v for v in VARIANTS if v[0] in ATTENTION]


@pytest.mark.parametrize("encoder,variant", VARIANTS)
@pytest.mark.parametrize("subsampling", [1, 4])
def test_padding_invariance(encoder, variant, subsampling):
    """An utterance alone gives the same log-probs as inside a padded batch."""
    model = model_for(encoder, variant, subsampling)
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


@pytest.mark.parametrize("encoder,variant", VARIANTS)
def test_encoder_output_is_zero_at_padding(encoder, variant):
    torch.manual_seed(0)
    enc = model_for(encoder, variant, subsampling=1).encoder
    x, lens = torch.randn(3, 30, 12), torch.tensor([30, 12, 1])
    y, y_lens = enc(x, lens)
    assert y.shape == (3, 30, enc.output_dim) and torch.equal(y_lens, lens)
    assert (y[1, 12:] == 0).all() and (y[2, 1:] == 0).all() and (y[0] != 0).any(-1).all()


@pytest.mark.parametrize("encoder", ATTENTION)
def test_attention_encoders_ignore_non_finite_padding(encoder):
    """inf / NaN in padded frames cannot leak through ``attention @ values`` (0 * NaN = NaN)."""
    enc = model_for(encoder, subsampling=1).encoder
    x, lens = torch.randn(2, 20, 12), torch.tensor([20, 11])
    with torch.no_grad():
        ref, _ = enc(x[1:, :11], lens[1:])
        x[1, 11:15], x[1, 15:] = float("nan"), float("inf")
        y, _ = enc(x, lens)
    assert torch.isfinite(y).all() and (y[1, 11:] == 0).all()
    assert torch.allclose(y[1, :11], ref[0], atol=1e-5)


def first_nonfinite_module(model: nn.Module, *args) -> str:
    """Name of the first module, in call order, whose output holds NaN or inf (or "none")."""
    found: list[str] = []

    def hook(name):
        def check(_module, _inputs, out):
            out = out[0] if isinstance(out, tuple) else out
            if not found and torch.is_tensor(out) and not torch.isfinite(out).all():
                found.append(f"{name} ({out.dtype})")
        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        model(*args)
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else "none"


# Seen 2026-12-01 (torch 2.14.1, an Intel Xeon with AVX-512 and AMX): NaN in real frames of every
# attention encoder under CPU bf16 autocast, from the CPU's bf16 flash-attention kernel; never on
# AVX2 machines nor on an AMD Zen 4. ``ctcasr.models.transformer.attention`` keeps attention in
# fp32 on the CPU; this test is strict everywhere, and the failure names the first module that
# turned non-finite.
@pytest.mark.parametrize("encoder,variant", ATTENTION_VARIANTS)
def test_attention_encoders_run_under_bf16_autocast(encoder, variant):
    """Mixed precision: the fp32 positions must not break attention's dtypes, nor give NaN."""
    model = model_for(encoder, variant)
    x, lens = torch.randn(2, 40, 9), torch.tensor([40, 30])
    with torch.no_grad():
        ref, _ = model(x, lens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, _ = model(x, lens)
            culprit = first_nonfinite_module(model, x, lens)
    assert culprit == "none", f"non-finite output first in {culprit}"
    assert low.dtype == torch.float32 and torch.allclose(low, ref, atol=0.1)


def test_a_front_end_one_bin_wide_convolves_in_fp32_on_the_cpu():
    """oneDNN's bf16 convolution on AMX CPUs returns NaN / 1e37 for an output one bin wide
    (seen 2026-12-07, torch 2.14.1; fine from two bins): a front end that narrows the feature
    axis to one bin (7 to 10 bins at x4) convolves in fp32 on the CPU under autocast, and
    in a bf16 model; a wider one keeps autocast's bf16 products."""
    cfg = FrontendConfig(subsampling=4, channels=4, dim=8)
    narrow, wide = Conv2dSubsampling(9, cfg), Conv2dSubsampling(23, cfg)
    assert narrow.fp32_on_cpu and not wide.fp32_on_cpu
    x = torch.randn(2, 1, 40, 9).abs()
    with torch.no_grad():
        ref = narrow.conv(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = narrow._conv(x)
            assert wide._conv(torch.randn(2, 1, 40, 23)).dtype == torch.bfloat16
        assert low.dtype == torch.float32 and torch.equal(low, ref)
        half = narrow.to(torch.bfloat16)._conv(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), ref, atol=0.1)


@pytest.mark.parametrize("encoder", ATTENTION)
def test_cpu_attention_runs_in_fp32_under_autocast_and_in_bf16(encoder, monkeypatch):
    """The guard against the bf16 kernel above, checkable on any CPU: what reaches
    ``scaled_dot_product_attention`` on the CPU is fp32, under autocast or in a bf16 model."""
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.dtype, k.dtype, v.dtype, torch.is_autocast_enabled("cpu")))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(transformer.F, "scaled_dot_product_attention", spy)
    model = model_for(encoder)
    x, lens = torch.randn(2, 40, 9), torch.tensor([40, 30])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x, lens)
    with torch.no_grad():
        y, _ = model.to(torch.bfloat16)(x.to(torch.bfloat16), lens)
    assert torch.isfinite(y).all()
    assert len(seen) == 2 * 2  # 2 layers, 2 runs
    assert set(seen) == {(torch.float32, torch.float32, torch.float32, False)}


def test_rotary_scores_depend_on_offset_only():
    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)
    cos, sin = rotary(10, 8, torch.device("cpu"))
    qs = apply_rotary(q.expand(10, 8), cos, sin)
    ks = apply_rotary(k.expand(10, 8), cos, sin)
    scores = qs @ ks.T  # [i, j] depends on j - i only
    for offset in range(-9, 10):
        diag = scores.diagonal(offset)
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-5)
    assert not torch.allclose(scores.diagonal(0)[0], scores.diagonal(1)[0])


@pytest.mark.parametrize("encoder", ["lstm", "gru", *ATTENTION])
def test_overfits_one_small_batch(encoder):
    """A tiny model learns a fixed random batch: the CTC loss goes to about zero (from ~8).

    Subsampling x4 (10 output frames for 40 input frames) and lr 1e-2 keep it to ~50-100 steps.
    """
    torch.manual_seed(0)
    x, lens = torch.randn(3, 40, 9), torch.tensor([40, 33, 26])
    tokens, token_lens = torch.randint(1, 6, (3, 4)), torch.tensor([4, 3, 2])
    model = model_for(encoder, subsampling=4, dropout=0.0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        loss = ctc_loss(*model(x, lens), tokens, token_lens).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < 0.05:
            break
    assert losses[-1] < 0.1, f"{encoder}: loss {losses[0]:.2f} -> {losses[-1]:.3f}"


@pytest.mark.parametrize(
    "conf, key",
    [
        ({"d_model": 10, "num_heads": 4}, "model.encoder_conf.d_model: 10 is not divisible"),
        ({"d_model": 12, "num_heads": 4}, "model.encoder_conf.d_model: rotary needs an even"),
        ({"num_heads": 0}, "model.encoder_conf.num_heads: must be positive"),
        ({"dropout": 1.0}, "model.encoder_conf.dropout: must be in"),
        ({"pos_enc": "relative"}, "model.encoder_conf.pos_enc: unknown 'relative'"),
        ({"conv_kernel": 4}, "model.encoder_conf.conv_kernel: must be odd"),
        ({"kernel": 3}, "unknown config key model.encoder_conf.kernel"),
        ({"cgmlp_dim": 7}, "model.encoder_conf.cgmlp_dim: must be even"),
        ({"merge_kernel": 2}, "model.encoder_conf.merge_kernel: must be odd"),
    ],
)
@pytest.mark.parametrize("encoder", ATTENTION)
def test_attention_config_rejects_bad_values(encoder, conf, key):
    if encoder != "ebranchformer" and ("cgmlp_dim" in conf or "merge_kernel" in conf):
        key = f"unknown config key model.encoder_conf.{next(iter(conf))}"
    if encoder == "transformer" and "conv_kernel" in conf:
        key = "unknown config key model.encoder_conf.conv_kernel"
    with pytest.raises(CtcasrError, match=key):
        Config.from_dict({"model": {"encoder": encoder, "encoder_conf": conf}})


def test_attention_config_from_yaml_mapping():
    cfg = Config.from_dict({"model": {"encoder": "conformer", "encoder_conf": {"d_model": 144}}})
    assert cfg.model.encoder_conf == ConformerConfig(d_model=144)
    assert Config.from_dict(cfg.to_dict()) == cfg


def _linear_and_conv(model):
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


@pytest.mark.parametrize("scheme", ["xavier", "kaiming"])
@pytest.mark.parametrize("encoder", ["lstm", "conformer"])
def test_init_scheme_changes_weights_and_zeroes_biases(scheme, encoder):
    default = model_for(encoder, init="default")
    model = model_for(encoder, init=scheme)
    assert torch.equal(model.cmvn.mean, default.cmvn.mean)  # buffers untouched
    assert torch.equal(model.cmvn.istd, default.cmvn.istd)
    for m in _linear_and_conv(model):
        assert (m.bias == 0).all()
        fan_in = m.weight[0].numel()
        fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
        bound = (6 / (fan_in + fan_out)) ** 0.5 if scheme == "xavier" else (6 / fan_in) ** 0.5
        assert m.weight.abs().max() <= bound + 1e-6
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            assert (m.weight == 1).all() and (m.bias == 0).all()
        if isinstance(m, nn.LSTM):
            w = m.weight_hh_l0[: m.hidden_size]  # the input gate's recurrent matrix
            assert torch.allclose(w @ w.T, torch.eye(m.hidden_size), atol=1e-5)
            assert (m.bias_ih_l0 == 0).all()
    pairs = zip(model.parameters(), default.parameters(), strict=True)
    changed = [not torch.equal(a, b) for a, b in pairs]
    assert sum(changed) > len(changed) // 2


def test_init_is_deterministic_under_a_seed_and_rejects_unknown_schemes():
    a, b = model_for("conformer", init="xavier"), model_for("conformer", init="xavier")
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(p, q) for p, q in pairs)
    c = model_for("conformer", init="xavier", seed=1)
    assert not torch.equal(a.head.weight, c.head.weight)
    with pytest.raises(CtcasrError, match=r"model.init: unknown 'uniform' \(choose default, xav"):
        init_weights(a, "uniform")


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


@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("factor", [4, 6, 8])
def test_subsampling_length_formula_matches_output(factor, separable):
    sub = Conv2dSubsampling(23, FrontendConfig(subsampling=factor, channels=2, dim=5,
                                               separable=separable))
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


@pytest.mark.parametrize("scheme", ["default", "xavier", "kaiming"])
def test_ebranchformer_gate_starts_open_whatever_the_scheme(scheme):
    """The cgMLP's gate: its depthwise convolution ~0 and bias 1, so the gating unit passes
    its other half through at the start (ESPnet's initialisation), under every init scheme."""
    model = model_for("ebranchformer", init=scheme)
    gates = [m.conv for m in model.modules() if type(m).__name__ == "CgMLP"]
    assert len(gates) == 2
    for conv in gates:
        assert conv.weight.abs().max() < 1e-4 and torch.equal(conv.bias,
                                                               torch.ones_like(conv.bias))
    other = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if scheme != "default":  # the scheme did reach the other layers
        assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in other)


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_separable_front_end_ignores_padding_and_is_smaller(factor):
    """The depthwise-separable front end: each later convolution is a depthwise one with the
    stride and a 1 x 1 (fewer weights than the full one), its channels-last weights give the
    same numbers as the usual layout, and padding after an utterance changes none of its
    real output frames."""
    torch.manual_seed(0)
    full = Conv2dSubsampling(23, FrontendConfig(subsampling=factor, channels=8, dim=5))
    sep = Conv2dSubsampling(23, FrontendConfig(subsampling=factor, channels=8, dim=5,
                                               separable=True))
    convs = [m for m in sep.conv if isinstance(m, nn.Conv2d)]
    assert [m.groups for m in convs] == [1] + [8, 1] * (len(full.layers) - 1)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert sum(p.numel() for p in sep.parameters()) < sum(p.numel() for p in full.parameters())
    x, lens = torch.randn(2, 90, 23), torch.tensor([90, 50])
    y, y_lens = sep(x, lens)
    alone, alone_lens = sep(x[1:, :50], lens[1:])
    assert y_lens[1] == alone_lens[0]
    assert torch.allclose(y[1, : y_lens[1]], alone[0], atol=1e-6)
    plain = Conv2dSubsampling(23, FrontendConfig(subsampling=factor, channels=8, dim=5,
                                                 separable=True))
    plain.load_state_dict(sep.state_dict())
    plain.conv.to(memory_format=torch.contiguous_format)
    assert torch.allclose(plain(x, lens)[0], y, atol=1e-5)
