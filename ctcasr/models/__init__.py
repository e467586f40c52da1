"""Model registry: ``model.encoder`` in the config names an entry of ``ENCODERS``.

Each entry gives the encoder's config dataclass (what ``model.encoder_conf`` is typed as) and a
factory ``(input_dim, conf) -> nn.Module`` with ``forward(x, x_lens) -> (y, y_lens)`` and
``output_dim``. Encoders keep the sequence length; only the front end changes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ctcasr.errors import CtcasrError
from ctcasr.models.conformer import ConformerConfig, ConformerEncoder
from ctcasr.models.ctc import CTCModel, GlobalCMVN
from ctcasr.models.frontend import Conv2dSubsampling
from ctcasr.models.init import init_weights
from ctcasr.models.rnn import RNNConfig, RNNEncoder
from ctcasr.models.transformer import TransformerConfig, TransformerEncoder

if TYPE_CHECKING:
    from ctcasr.config import ModelConfig

ENCODERS: dict[str, tuple[type, Callable[[int, Any], nn.Module]]] = {
    "lstm": (RNNConfig, lambda d, c: RNNEncoder("lstm", d, c)),
    "gru": (RNNConfig, lambda d, c: RNNEncoder("gru", d, c)),
    "conformer": (ConformerConfig, ConformerEncoder),
    "transformer": (TransformerConfig, TransformerEncoder),
}


def encoder_config_class(name: str) -> type:
    if name not in ENCODERS:
        raise CtcasrError(f"model.encoder: unknown {name!r} (choose {', '.join(ENCODERS)})")
    return ENCODERS[name][0]


def build_model(
    cfg: ModelConfig, input_dim: int, vocab_size: int, mean: torch.Tensor, std: torch.Tensor
) -> CTCModel:
    _, factory = ENCODERS[cfg.encoder]
    frontend = Conv2dSubsampling(input_dim, cfg.frontend)
    encoder = factory(frontend.output_dim, cfg.encoder_conf)
    model = CTCModel(GlobalCMVN(mean, std), frontend, encoder, vocab_size, cfg.head_dropout,
                     cfg.inter_ctc_layers, cfg.inter_ctc_condition)
    init_weights(model, cfg.init)  # parameters only: the CMVN buffers stay as given
    return model


def set_chunking(model: CTCModel, chunk_size: int, left_chunks: int = -1) -> None:
    """Decode ``model`` with chunked attention (``chunk_size`` output frames; 0: full context),
    as a streaming Conformer / Transformer would see the audio."""
    if not hasattr(model.encoder, "set_chunking"):
        raise CtcasrError(f"--chunk-size: the {type(model.encoder).__name__} has no attention "
                          "to chunk (a Conformer or Transformer has)")
    if chunk_size < 0:
        raise CtcasrError(f"--chunk-size: must be >= 0, got {chunk_size}")
    model.encoder.set_chunking(chunk_size, left_chunks)


__all__ = ["ENCODERS", "CTCModel", "GlobalCMVN", "build_model", "encoder_config_class",
           "set_chunking"]
