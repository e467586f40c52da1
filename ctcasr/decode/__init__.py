"""CTC decoders, looked up by name; all share one signature.

``decoder(log_probs [B, T, V], lengths [B], **options) -> list[list[Hypothesis]]``: for each
utterance an N-best list, best first.
"""

from __future__ import annotations

from collections.abc import Callable

from ctcasr.decode.greedy import Hypothesis, greedy_search
from ctcasr.errors import CtcasrError

DECODERS: dict[str, Callable[..., list[list[Hypothesis]]]] = {
    "greedy": greedy_search,
}


def get_decoder(name: str) -> Callable[..., list[list[Hypothesis]]]:
    if name not in DECODERS:
        raise CtcasrError(f"unknown decoder {name!r} (choose {', '.join(DECODERS)})")
    return DECODERS[name]


__all__ = ["DECODERS", "Hypothesis", "get_decoder", "greedy_search"]
