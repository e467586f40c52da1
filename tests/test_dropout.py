"""models.dropout.Dropout: nn.Dropout's behaviour with a cheaper mask on the CPU."""

import pytest
import torch
from torch import nn

from ctcasr.models.dropout import Dropout, dropout_mask


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_rate_scale_and_expectation(p):
    torch.manual_seed(0)
    y = Dropout(p).train()(torch.ones(1000, 1001))  # odd count: the last word half used
    dropped = (y == 0).double().mean().item()
    exact = round(p * 32768) / 32768
    assert abs(exact - p) < 1 / 65536
    assert abs(dropped - p) < 6 * (p * (1 - p) / y.numel()) ** 0.5
    kept = y[y != 0]
    assert torch.equal(kept, torch.full_like(kept, 1 / (1 - exact)))
    assert abs(y.mean().item() - 1) < 0.005


def test_neighbours_are_independent():
    """Two elements share one 32-bit draw: their drops must still be independent (both
    halves carry 15 uniform bits; the word's sign bit, always 0, is masked off)."""
    torch.manual_seed(1)
    d = dropout_mask(torch.Size([400_000]), 0.5, torch.float32) == 0
    pairs = d.view(-1, 2)
    both = (pairs[:, 0] & pairs[:, 1]).double().mean().item()
    assert abs(both - 0.25) < 0.006
    assert abs(pairs[:, 0].double().mean().item() - 0.5) < 0.006
    assert abs(pairs[:, 1].double().mean().item() - 0.5) < 0.006


def test_identity_in_eval_or_at_zero_and_zeros_at_one():
    x = torch.randn(4, 7, 3)
    assert torch.equal(Dropout(0.3).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    assert torch.equal(dropout_mask(x.shape, 0.99999, x.dtype), torch.zeros_like(x))


def test_seeded_repeatable_fresh_each_call_and_gradient_is_the_mask():
    d = Dropout(0.2).train()
    torch.manual_seed(5)
    a, b = d(torch.ones(64, 33)), d(torch.ones(64, 33))
    torch.manual_seed(5)
    assert torch.equal(d(torch.ones(64, 33)), a)
    assert not torch.equal(a, b)
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(5)
    y = d(x)
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.allclose(x.grad, g * a)  # a = the mask (the input was ones)


def test_dtype_and_module_compatibility():
    torch.manual_seed(0)
    y = Dropout(0.25).train()(torch.ones(10, 10, dtype=torch.bfloat16))
    scale = torch.tensor(1 / 0.75, dtype=torch.bfloat16).item()
    assert y.dtype == torch.bfloat16 and set(y.unique().tolist()) == {0.0, scale}
    assert isinstance(Dropout(0.1), nn.Dropout)  # same repr, state_dict, p and inplace
    assert Dropout(0.1).state_dict() == {}
