"""The decoding a model carries: decoder, options and word LM, as ``ctcasr tune-lm`` chose them.

A checkpoint (key ``decoding``) and an ONNX export (inside its model information) hold
:meth:`DecodeSettings.state_dict`: plain values, the LM as its ARPA text and the open vocabulary
as a word -> count table, so the file alone decodes as its reported numbers were decoded.
``ctcasr decode``, ``transcribe``, ``serve`` and :func:`ctcasr.load` start from these and apply
what the user says on top (:meth:`DecodeSettings.override`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctcasr.decode import DecodeOptions
from ctcasr.decode.context import DEFAULT_BOOST, Hotword, read_hotwords
from ctcasr.errors import CtcasrError, first_line

NO_LM = "none"  # --lm none: beam search without the model's LM
_NUMBERS = ("beam", "topk", "prune", "beam_prune", "lm_weight", "word_bonus", "unk_penalty")


@dataclass(frozen=True)
class DecodeSettings:
    decoder: str = "greedy"
    options: DecodeOptions = DecodeOptions()
    note: str = ""  # how they were chosen, e.g. "tuned on valid.jsonl (WER 12.30 %)"

    def describe(self) -> str:
        o = self.options
        if self.decoder != "beam":
            return self.decoder
        text = f"beam {o.beam}"
        if o.lm is not None:
            text += (f" + LM (weight {o.lm_weight:g}, word bonus {o.word_bonus:g}, "
                     f"unk penalty {o.unk_penalty:g})")
        if o.hotwords:
            text += f" + {len(o.hotwords)} hotword(s)"
        return text

    def state_dict(self) -> dict[str, Any]:
        from ctcasr.lm import NGramLM, read_vocab
        from ctcasr.lm.ngram import read_arpa_text

        o = self.options
        lm = o.lm.arpa() if isinstance(o.lm, NGramLM) else read_arpa_text(o.lm) if o.lm else None
        vocab = read_vocab(o.vocab) if isinstance(o.vocab, str) else \
            dict(o.vocab) if o.vocab else None
        return {"decoder": self.decoder, **{k: getattr(o, k) for k in _NUMBERS},
                "lm": lm, "vocab": vocab, "note": self.note}

    @classmethod
    def from_state(cls, d: dict[str, Any], where: str) -> DecodeSettings:
        from ctcasr.lm import NGramLM

        try:
            lm = NGramLM.from_arpa(d["lm"], f"{where} (its LM)") if d.get("lm") else None
            numbers = {k: type(getattr(DecodeOptions, k))(d[k]) for k in _NUMBERS if k in d}
            vocab = {str(w): float(c) for w, c in d["vocab"].items()} if d.get("vocab") else None
            opts = DecodeOptions(**numbers, lm=lm, vocab=vocab)
            return cls(str(d["decoder"]), opts, str(d.get("note", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CtcasrError(f"{where}: bad decoding settings ({first_line(e)})") from None

    def override(self, decoder: str | None = None, lm: str | Path | None = None,
                 vocab: str | Path | None = None, **given: Any) -> DecodeSettings:
        """These settings with what the user gave (``None``: not given) on top. ``lm`` ``none``
        drops the LM; a given ``lm`` or hotwords without ``decoder`` means beam search;
        ``decoder`` ``greedy`` drops the carried LM."""
        changes = {k: v for k, v in given.items() if v is not None}
        if changes.get("hotwords") is not None:
            changes["hotwords"] = tuple(changes["hotwords"])
            decoder = decoder or ("beam" if changes["hotwords"] else None)
        if lm is not None:
            changes["lm"] = None if str(lm) == NO_LM else str(lm)
            if changes["lm"] is None:
                changes["vocab"] = None
            decoder = decoder or ("beam" if changes["lm"] else None)
        if vocab is not None:
            changes["vocab"] = str(vocab)
        chosen = decoder or self.decoder
        if chosen == "greedy" and lm is None:
            changes.update(lm=None, vocab=None)
        if changes.get("nbest", 1) > 1 and chosen == "greedy":
            raise CtcasrError("--nbest needs --decoder beam")
        opts = dataclasses.replace(self.options, **changes)
        return DecodeSettings(chosen, opts, self.note if opts == self.options else "")


def hotword_list(items: Any, boost: float | None = None) -> tuple[Hotword, ...] | None:
    """Hotwords as an API or a request gives them: a file (path), phrases, or
    :class:`Hotword` s; None stays None (not given)."""
    if items is None:
        return None
    boost = DEFAULT_BOOST if boost is None else boost
    if isinstance(items, (str, Path)):
        return tuple(read_hotwords(items, boost))
    out = []
    for h in items:
        if isinstance(h, Hotword):
            out.append(h)
        elif isinstance(h, str) and h.split():
            out.append(Hotword(" ".join(h.lower().split()), boost))
        else:
            raise CtcasrError(f"hotwords: expected phrases (strings), got {h!r}")
    return tuple(out)


def parse_grid(text: str, what: str) -> list[float]:
    """``"0.3 0.5 0.8"`` (spaces or commas) -> numbers; ``-inf`` allowed."""
    try:
        values = [float(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise CtcasrError(f"{what}: expected numbers separated by spaces, got {text!r}") \
            from None
    if not values or any(math.isnan(v) for v in values):
        raise CtcasrError(f"{what}: expected numbers separated by spaces, got {text!r}")
    return values
