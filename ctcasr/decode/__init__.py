"""CTC decoders, looked up by name; all share one signature.

``make_decoder(name, options, tokenizer)`` returns ``decode(log_probs [B, T, V], lengths [B]) ->
list[list[Hypothesis]]``: for each utterance an N-best list, best first. Options that a decoder
does not use are ignored (greedy has no beam).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ctcasr.decode.beam import BeamSearch, LMFusion, prefix_beam_search
from ctcasr.decode.context import ContextGraph, Hotword
from ctcasr.decode.greedy import Hypothesis, greedy_search
from ctcasr.errors import CtcasrError
from ctcasr.tokenizer import PhoneTokenizer, Tokenizer

if TYPE_CHECKING:
    from ctcasr.lm import NGramLM

Decoder = Callable[[torch.Tensor, torch.Tensor], list[list[Hypothesis]]]


@dataclass(frozen=True)
class DecodeOptions:
    beam: int = 10  # prefixes kept per frame
    nbest: int = 1  # hypotheses returned per utterance
    topk: int = 0  # expand only the k most probable tokens of each frame (0: beam + 1)
    prune: float = 5.0  # expand only tokens within this many nats of the frame's best
    # (docs/decoding.md: what 5 and 10 cost and give)
    lm: str | NGramLM | None = None  # word n-gram LM (an ARPA file, or read) for shallow fusion
    lm_weight: float = 0.5
    word_bonus: float = 0.0  # added per word (counters the LM's preference for short outputs)
    unk_penalty: float = 0.0  # added per word the LM does not know (-inf: only LM words)
    beam_prune: float = math.inf  # drop prefixes this far below the frame's best (LM included)
    vocab: str | Mapping[str, float] | None = None  # open vocabulary: a file of words (with
    # counts, or read) the search may spell besides the LM's, each of the LM's <unk> class
    # (+ unk_penalty); others ruled out
    hotwords: tuple[Hotword, ...] = ()  # phrases to prefer (ctcasr.decode.context); their
    # words are admitted by the LM search without the OOV penalty

    def __post_init__(self) -> None:
        if self.unk_penalty > 0 or math.isnan(self.unk_penalty):
            raise CtcasrError(f"unk penalty {self.unk_penalty}: need a value <= 0 (-inf allows "
                              "only the LM's words)")


def _greedy(opts: DecodeOptions, tokenizer: Tokenizer) -> Decoder:
    return greedy_search


@dataclass(frozen=True)
class BeamDecoder:
    """Prefix beam search (with the LM when given): called on a batch like every decoder, and
    ``search()`` for a frame-synchronous one that a stream advances chunk by chunk."""

    opts: DecodeOptions
    fusion: LMFusion | None = None
    phones: bool = False  # a phone model: with the LM, its hypotheses are read as words
    context: ContextGraph | None = None  # the hotwords

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[Hypothesis]]:
        o = self.opts
        return prefix_beam_search(log_probs, lengths, beam=o.beam, nbest=o.nbest, topk=o.topk,
                                  prune=o.prune, fusion=self.fusion, beam_prune=o.beam_prune,
                                  context=self.context)

    def search(self, batch: int = 1, device: torch.device | str = "cpu") -> BeamSearch:
        o = self.opts
        return BeamSearch(batch, o.beam, o.topk, o.prune, self.fusion, o.beam_prune,
                          device=device, context=self.context)

    @property
    def words(self) -> Callable[[list[int]], str] | None:
        return self.fusion.words if self.phones and self.fusion is not None else None


def output_text(decoder: Decoder, tokenizer: Tokenizer
                ) -> tuple[Callable[[list[int]], str], Callable[[str], str]]:
    """How ``decoder``'s hypotheses (tokens) read as text, and how a reference text becomes what
    that text is scored against: words for every model, except a phone model decoded without
    the lexicon and LM, which gives (and is scored on) phones."""
    words = getattr(decoder, "words", None)
    if words is not None:
        return words, lambda text: text
    return tokenizer.decode, tokenizer.reference


def _beam(opts: DecodeOptions, tokenizer: Tokenizer) -> Decoder:
    fusion = None
    if opts.lm:
        from ctcasr.lm import NGramLM, read_vocab

        pieces, spell = tokenizer.spelling()
        extra = None
        if opts.vocab and math.isfinite(opts.unk_penalty):  # (-inf: only LM words, as without)
            extra = read_vocab(opts.vocab) if isinstance(opts.vocab, str) else dict(opts.vocab)
        lm = NGramLM.read_arpa(opts.lm) if isinstance(opts.lm, str) else opts.lm
        free = tuple(sorted({w for h in opts.hotwords for w in h.phrase.split()}))
        fusion = LMFusion(lm, pieces, opts.lm_weight, opts.word_bonus, opts.unk_penalty, spell,
                          extra, free)
    context = ContextGraph.build(opts.hotwords, tokenizer) if opts.hotwords else None
    return BeamDecoder(opts, fusion, isinstance(tokenizer, PhoneTokenizer), context)


DECODERS: dict[str, Callable[[DecodeOptions, Tokenizer], Decoder]] = {
    "greedy": _greedy,
    "beam": _beam,
}


def make_decoder(name: str, opts: DecodeOptions, tokenizer: Tokenizer) -> Decoder:
    if name not in DECODERS:
        raise CtcasrError(f"unknown decoder {name!r} (choose {', '.join(DECODERS)})")
    if opts.lm and name != "beam":
        raise CtcasrError("--lm needs --decoder beam")
    if opts.hotwords and name != "beam":
        raise CtcasrError("--hotwords needs --decoder beam")
    if opts.vocab and not opts.lm:
        raise CtcasrError("--vocab needs --lm (it opens the LM search's vocabulary)")
    return DECODERS[name](opts, tokenizer)


__all__ = ["DECODERS", "BeamDecoder", "BeamSearch", "DecodeOptions", "Hypothesis",
           "greedy_search", "make_decoder", "output_text", "prefix_beam_search"]
