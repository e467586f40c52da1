"""``train.compile``: the encoder's forward compiled by ``torch.compile``.

Only the encoder is compiled (the front end, CTC head and loss stay eager), and only its
``forward``, so the module, its parameters and its checkpoints are the same as without. The
time axis is marked dynamic (``dynamic=True``): length-bucketed batches differ in length, and
one graph serves them all instead of one compilation per length. Compiling happens at the first
batch (seconds to minutes); when the compiler fails there (no C++ compiler for inductor on the
CPU, an operator it cannot handle), training goes on eagerly with one warning saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("ctcasr")


class CompiledForward:
    """``fn`` compiled, with the eager ``fn`` to fall back on."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.eager = fn
        self.compiled = torch.compile(fn, dynamic=True)
        self.failed = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as e:  # the compiler's own errors  # noqa: BLE001
            self.failed = True
            log.warning("train.compile: torch.compile failed (%s: %s); training eagerly",
                        type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
            return self.eager(*args, **kwargs)


def compile_encoder(model: torch.nn.Module) -> None:
    """Replace ``model.encoder.forward`` by its compiled form (in place)."""
    model.encoder.forward = CompiledForward(model.encoder.forward)
