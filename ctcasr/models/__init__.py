"""Model registry: ``model.encoder`` in the config names an entry of ``ENCODERS``.

Each entry is a factory ``(input_dim, conf) -> nn.Module`` with ``forward(x, x_lens) -> (y,
y_lens)`` and ``output_dim``; ``conf`` is the encoder's config dataclass, which
``ctcasr.config.ENCODER_CONFIGS`` names under the same key. Encoders keep the sequence length;
only the front end changes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ctcasr.config import ENCODER_CONFIGS
from ctcasr.errors import CtcasrError
from ctcasr.models.conformer import ConformerEncoder
from ctcasr.models.ctc import CTCModel, GlobalCMVN
from ctcasr.models.ebranchformer import EBranchformerEncoder
from ctcasr.models.frontend import Conv2dSubsampling
from ctcasr.models.init import init_weights
from ctcasr.models.rnn import RNNEncoder
from ctcasr.models.transformer import TransformerEncoder

if TYPE_CHECKING:
    from ctcasr.config import ModelConfig

# model.encoder -> (input_dim, its typed encoder_conf) -> the encoder; the config classes are
# ctcasr.config.ENCODER_CONFIGS, under the same names
ENCODERS: dict[str, Callable[[int, Any], nn.Module]] = {
    "lstm": lambda d, c: RNNEncoder("lstm", d, c),
    "gru": lambda d, c: RNNEncoder("gru", d, c),
    "conformer": ConformerEncoder,
    "transformer": TransformerEncoder,
    "ebranchformer": EBranchformerEncoder,
}
assert set(ENCODERS) == set(ENCODER_CONFIGS)


def build_model(
    cfg: ModelConfig, input_dim: int, vocab_size: int, mean: torch.Tensor, std: torch.Tensor
) -> CTCModel:
    factory = ENCODERS[cfg.encoder]
    frontend = Conv2dSubsampling(input_dim, cfg.frontend)
    encoder = factory(frontend.output_dim, cfg.encoder_conf)
    model = CTCModel(GlobalCMVN(mean, std), frontend, encoder, vocab_size, cfg.head_dropout,
                     cfg.inter_ctc_layers, cfg.inter_ctc_condition)
    init_weights(model, cfg.init)  # parameters only: the CMVN buffers stay as given
    return model


def set_chunking(model: CTCModel, chunk_size: int, left_chunks: int = -1) -> None:
    """Decode ``model`` with chunked attention (``chunk_size`` output frames; 0: full context),
    as a streaming Conformer / Transformer / E-Branchformer would see the audio."""
    if not hasattr(model.encoder, "set_chunking"):
        raise CtcasrError(f"--chunk-size: the {type(model.encoder).__name__} has no attention "
                          "to chunk (a Conformer or Transformer has)")
    if chunk_size < 0:
        raise CtcasrError(f"--chunk-size: must be >= 0, got {chunk_size}")
    model.encoder.set_chunking(chunk_size, left_chunks)


__all__ = ["ENCODERS", "CTCModel", "GlobalCMVN", "build_model",
           "set_chunking"]
