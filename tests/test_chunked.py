"""Chunked attention (streaming Conformer / Transformer, WeNet's U2): the mask, causality (no
output frame reads a later chunk), the bounded left context, the causal convolution, padding, and
dynamic chunk training."""

from __future__ import annotations

import pytest
import torch

from ctcasr.config import ConformerConfig, EBranchformerConfig, TransformerConfig
from ctcasr.models.conformer import ConformerEncoder
from ctcasr.models.ebranchformer import EBranchformerEncoder
from ctcasr.models.mask import make_chunk_mask
from ctcasr.models.transformer import TransformerEncoder

KINDS = ["conformer", "transformer", "ebranchformer"]


def test_chunk_mask_values():
    m = make_chunk_mask(5, 2)
    assert m.int().tolist() == [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0],
                                [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    m = make_chunk_mask(6, 2, left=1)  # its own chunk and one before
    assert m.int().tolist()[5] == [0, 0, 1, 1, 1, 1] and m.int().tolist()[1] == [1, 1, 0, 0, 0, 0]
    assert make_chunk_mask(4, 1, left=0).equal(torch.eye(4, dtype=torch.bool))


def encoder(kind: str, chunk: int, left: int = -1, causal: bool = True, layers: int = 2,
            dynamic: bool = False):
    torch.manual_seed(0)
    conf = dict(d_model=16, num_layers=layers, num_heads=2, ffn_dim=32, dropout=0.0,
                chunk_size=chunk, left_chunks=left, dynamic_chunk=dynamic)
    if kind == "conformer":
        return ConformerEncoder(8, ConformerConfig(conv_kernel=5, causal=causal, **conf)).eval()
    if kind == "ebranchformer":
        return EBranchformerEncoder(8, EBranchformerConfig(conv_kernel=5, cgmlp_dim=32,
                                                           causal=causal, **conf)).eval()
    return TransformerEncoder(8, TransformerConfig(**conf)).eval()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pos_chunk", [0, 1, 2, 3])
def test_no_output_reads_a_later_chunk(kind, pos_chunk):
    """Changing the frames after chunk k leaves every output of chunks <= k as it was."""
    enc, c = encoder(kind, chunk=4), 4
    x = torch.randn(1, 16, 8)
    y = x.clone()
    y[:, (pos_chunk + 1) * c :] = torch.randn_like(y[:, (pos_chunk + 1) * c :]) * 5
    lens = torch.tensor([16])
    with torch.no_grad():
        a, b = enc(x, lens)[0], enc(y, lens)[0]
    end = (pos_chunk + 1) * c
    assert (a[:, :end] - b[:, :end]).abs().max() < 1e-6
    if end < 16:
        assert (a[:, end:] - b[:, end:]).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["conformer", "ebranchformer"])
def test_a_centred_convolution_reads_ahead(kind):
    """Without ``causal`` the Conformer's (E-Branchformer's) convolutions read kernel // 2
    frames past the chunk: chunked attention alone does not make it stream."""
    enc = encoder(kind, chunk=4, causal=False)
    x = torch.randn(1, 16, 8)
    y = x.clone()
    y[:, 4:] += 5.0
    with torch.no_grad():
        a, b = enc(x, torch.tensor([16]))[0], enc(y, torch.tensor([16]))[0]
    assert (a[:, :4] - b[:, :4]).abs().max() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_left_context_is_bounded(kind):
    """With 1 chunk of left context and 2 layers, frames more than 2 chunks back are never
    read (the context grows by a chunk per layer) - here by the last chunk."""
    enc = encoder(kind, chunk=3, left=1, causal=True)
    x = torch.randn(1, 15, 8)
    y = x.clone()
    y[:, :3] += 5.0  # chunk 0
    with torch.no_grad():
        a, b = enc(x, torch.tensor([15]))[0], enc(y, torch.tensor([15]))[0]
    if kind == "transformer":  # chunk 4 reads chunks 3, 2 (two layers): not 0
        assert (a[:, 12:] - b[:, 12:]).abs().max() < 1e-6
    assert (a[:, 3:6] - b[:, 3:6]).abs().max() > 1e-3  # chunk 1 reads chunk 0


@pytest.mark.parametrize("kind", KINDS)
def test_padding_invariance_with_chunks(kind):
    enc = encoder(kind, chunk=3, left=1)
    x = torch.randn(3, 20, 8)
    lens = torch.tensor([20, 7, 13])
    x[1, 7:] = 1e3
    with torch.no_grad():
        batch = enc(x, lens)[0]
        assert torch.isfinite(batch).all()
        for i in range(3):
            n = int(lens[i])
            alone = enc(x[i : i + 1, :n], lens[i : i + 1])[0]
            assert (alone[0] - batch[i, :n]).abs().max() < 1e-5
            assert (batch[i, n:] == 0).all()


def test_dynamic_chunk_training_and_decoding_chunk():
    enc = encoder("conformer", chunk=0, dynamic=True).train()
    torch.manual_seed(3)
    draws = [enc._chunk() for _ in range(200)]
    full = sum(c == 0 for c, _ in draws)
    assert 60 < full < 140 and all(0 <= c <= 25 for c, _ in draws)
    assert {c for c, _ in draws if c} == set(range(1, 26))
    enc.eval()
    x, lens = torch.randn(1, 12, 8), torch.tensor([12])
    with torch.no_grad():
        whole = enc(x, lens)[0]  # eval: full context by default
        enc.set_chunking(4)
        chunked = enc(x, lens)[0]
        enc.set_chunking(0)
        again = enc(x, lens)[0]
    assert torch.equal(whole, again) and (whole - chunked).abs().max() > 1e-4
    assert (whole[:, 8:] - chunked[:, 8:]).abs().max() < (whole[:, :8] - chunked[:, :8]).abs().max()


def test_set_chunking_on_models(tmp_path):
    from test_transcribe import make_checkpoint

    from ctcasr.checkpoint import load_model as load_recognizer
    from ctcasr.errors import CtcasrError
    from ctcasr.models import set_chunking

    rec = load_recognizer(make_checkpoint(tmp_path / "c.pt", "conformer"))
    x, lens = torch.randn(1, 200, 23), torch.tensor([200])
    with torch.no_grad():
        whole = rec.model(x, lens)[0]
        set_chunking(rec.model, 8, 2)
        assert rec.model.encoder.chunking == (8, 2)
        assert (rec.model(x, lens)[0] - whole).abs().max() > 1e-4
    lstm = load_recognizer(make_checkpoint(tmp_path / "l.pt", "lstm"))
    with pytest.raises(CtcasrError, match="RNNEncoder has no attention to chunk"):
        set_chunking(lstm.model, 8)
