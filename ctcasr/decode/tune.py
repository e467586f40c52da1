"""Choose the LM weight, word bonus and OOV penalty on a validation set (``ctcasr tune-lm``).

The validation set goes through the model once; each batch's log-probabilities are decoded by
every point of the grid (beam search + the LM), so the grid costs beam searches, not model
passes, and memory holds one batch. The point with the lowest WER wins (ties: lower CER, then
the grid's order); :func:`tune_lm` returns it as the :class:`DecodeSettings` a model carries.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch

from ctcasr.data.badinputs import BadInputs
from ctcasr.data.manifest import read_manifest
from ctcasr.decode import DecodeOptions, make_decoder, output_text
from ctcasr.decode.runner import Recognizer, log_prob_batches
from ctcasr.decode.settings import DecodeSettings
from ctcasr.errors import CtcasrError
from ctcasr.scoring import score


@dataclass
class GridPoint:
    lm_weight: float
    word_bonus: float
    unk_penalty: float
    wer: float = 0.0
    cer: float = 0.0

    def line(self) -> str:
        return (f"LM weight {self.lm_weight:g}, word bonus {self.word_bonus:g}, unk penalty "
                f"{self.unk_penalty:g}")


@torch.no_grad()
def tune_lm(rec: Recognizer, valid: Path, lm: str, beam: int, weights: list[float],
            bonuses: list[float], penalties: list[float], vocab: str | None = None,
            max_frames: int = 0, num_workers: int = 0
            ) -> tuple[DecodeSettings, list[GridPoint], GridPoint]:
    """Beam ``beam`` + ``lm`` at every (weight, bonus, penalty) on ``valid``: the best point's
    settings, every point with its WER / CER (grid order), and the best point."""
    from ctcasr.lm import NGramLM, read_vocab

    utts = [u for u in read_manifest(valid) if u.text]
    if not utts:
        raise CtcasrError(f"{valid}: no transcribed utterances to tune on")
    model_lm = NGramLM.read_arpa(lm)
    words = read_vocab(vocab) if vocab else None
    grid = [GridPoint(w, b, u) for w, b, u in itertools.product(weights, bonuses, penalties)]
    options = [DecodeOptions(beam=beam, lm=model_lm, lm_weight=p.lm_weight,
                             word_bonus=p.word_bonus, unk_penalty=p.unk_penalty, vocab=words)
               for p in grid]
    decoders = [make_decoder("beam", o, rec.tokenizer) for o in options]
    text_of, reference = output_text(decoders[0], rec.tokenizer)
    refs: list[str] = []
    hyps: list[list[str]] = [[] for _ in grid]
    for positions, _, log_probs, lens in log_prob_batches(rec, utts, max_frames, num_workers,
                                                          BadInputs()):
        refs += [reference(utts[p].text) for p in positions]
        for out, decode in zip(hyps, decoders, strict=True):
            out += [text_of(nbest[0].tokens) for nbest in decode(log_probs, lens)]
    for p, h in zip(grid, hyps, strict=True):
        s = score(refs, h)[0]
        p.wer, p.cer = s.wer, s.cer
    i = min(range(len(grid)), key=lambda k: (grid[k].wer, grid[k].cer, k))
    note = f"beam {beam} + LM tuned on {valid.name} (WER {grid[i].wer:.2f} %)"
    return DecodeSettings("beam", options[i], note), grid, grid[i]
