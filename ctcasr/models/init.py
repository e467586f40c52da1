"""Parameter initialisation, chosen by ``model.init``; applied once by ``build_model``.

- ``default``: PyTorch's own initialisation is kept.
- ``xavier``: ``xavier_uniform_`` for the weights of every ``Linear`` / ``Conv1d`` / ``Conv2d``.
- ``kaiming``: ``kaiming_uniform_`` (fan_in, ReLU gain) for the same weights, as ESPnet's
  ``kaiming_uniform`` does.

With ``xavier`` and ``kaiming`` the biases of those layers are zeroed, and LSTM / GRU layers get
``xavier_uniform_`` input weights, orthogonal recurrent weights (one orthogonal matrix per gate)
and zero biases. Normalisation layers keep weight 1 and bias 0, and buffers (the CMVN
statistics) are never touched. Whatever the scheme, a module with an ``init_own()`` method then
sets its own parameters that way (a part whose start matters more than its scale: the
E-Branchformer's gate starts open, as ESPnet's ``espnet_initialization_fn`` does).
"""

from __future__ import annotations

import torch
from torch import nn

from ctcasr.errors import CtcasrError

INIT_SCHEMES = ("default", "xavier", "kaiming")


def init_weights(model: nn.Module, scheme: str) -> None:
    """Re-initialise ``model``'s parameters in place (draws from torch's global RNG)."""
    if scheme not in INIT_SCHEMES:
        raise CtcasrError(f"model.init: unknown {scheme!r} (choose {', '.join(INIT_SCHEMES)})")
    for module in model.modules():
        if scheme == "default":
            pass
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LSTM, nn.GRU)):
            _init_rnn(module)
    for module in model.modules():
        if hasattr(module, "init_own"):
            module.init_own()


def _init_rnn(rnn: nn.LSTM | nn.GRU) -> None:
    for name, p in rnn.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(p)
        elif name.startswith("weight_hh"):
            with torch.no_grad():
                for gate in p.chunk(p.shape[0] // p.shape[1]):  # [gates*H, H] -> [H, H] each
                    nn.init.orthogonal_(gate)
        elif name.startswith("bias"):
            nn.init.zeros_(p)
