"""A manifest through a :class:`Transcriber`: ``ctcasr decode`` (hypotheses and the WER report)
and ``ctcasr tune-lm`` (the LM settings chosen on a validation set).

Both read the manifest in chunks of ``CHUNK`` utterances, bucketed by length, through the same
engine and batching as ``ctcasr transcribe``, so a checkpoint and its ONNX export are decoded and
scored by the same code, and memory does not grow with the manifest (only the ids are kept, to
refuse duplicates).
"""

from __future__ import annotations

import itertools
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from ctcasr.data.badinputs import BadInputs
from ctcasr.data.manifest import Utterance, iter_manifest, read_manifest
from ctcasr.decode import DecodeOptions, make_decoder, output_text
from ctcasr.decode.settings import DecodeSettings
from ctcasr.errors import CtcasrError
from ctcasr.infer.transcriber import CHUNK, Source, Transcriber
from ctcasr.scoring import ReportWriter, Score, score


def source(u: Utterance) -> Source:
    return Source(u.id, u.audio, offset=u.offset, duration=u.duration, where=u.where)


@torch.no_grad()
def decode_manifest(asr: Transcriber, manifest: Path, out_dir: Path, timestamps: bool = False,
                    skip_bad: bool = False) -> Score | None:
    """Decode every utterance of ``manifest``; write ``hyp.txt``, ``errors.txt``,
    ``summary.txt``, ``summary.json`` into ``out_dir`` (plus ``nbest.txt`` when the decoder
    gives more than one hypothesis, ``words.ctm`` with ``timestamps``, and ``skipped.txt``
    with ``skip_bad``: bad utterances are then left out and listed)."""
    reference = output_text(asr.decoder, asr.tokenizer)[1]
    bad = BadInputs(skip_bad)
    utts = iter_manifest(manifest, require_text=False, bad=bad)
    total = 0
    with ExitStack() as stack:
        report = stack.enter_context(ReportWriter(out_dir, manifest.name, CHUNK))
        nbest_f = stack.enter_context((out_dir / "nbest.txt").open("w", encoding="utf-8")) \
            if asr.nbest > 1 else None
        ctm_f = stack.enter_context((out_dir / "words.ctm").open("w", encoding="utf-8")) \
            if timestamps else None
        bar = stack.enter_context(tqdm(desc="decode", unit="utt", disable=None))
        while chunk := list(itertools.islice(utts, CHUNK)):
            total += len(chunk)
            refs = {u.id: u.text for u in chunk}
            for t in asr.transcribe_iter(map(source, chunk), on_error=bad.skip_or_raise):
                ref = refs[t.name]
                report.add(t.name, reference(ref) if ref else None, t.text)
                if nbest_f is not None:
                    nbest_f.writelines(f"{t.name}\t{n}\t{sc:.4f}\t{text}\n"
                                       for n, (sc, text) in enumerate(t.nbest, 1))
                if ctm_f is not None:
                    ctm_f.writelines(f"{t.name} 1 {w.start:.3f} {w.end - w.start:.3f} {w.word} "
                                     f"{w.confidence:.3f}\n" for w in t.words)
            bar.update(len(chunk))
        if not total:
            raise CtcasrError(f"{manifest}: manifest is empty" +
                              (f" ({bad.count} bad line(s) skipped)" if bad.count else ""))
        result = report.close()
    bad.report(out_dir / "skipped.txt")
    return result


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


def widened(values: list[float], best: float, floor: float | None = None) -> list[float]:
    """One more value past the edge of ``values`` that ``best`` sits on (the grid's last step
    again; never below ``floor``), or none: ``best`` inside, or fewer than two values."""
    v = sorted(set(values))
    if len(v) < 2:
        return []
    if best == v[-1]:
        return [v[-1] + (v[-1] - v[-2])]
    if best == v[0]:
        lower = v[0] - (v[1] - v[0])
        return [lower] if floor is None or lower >= floor else ([floor] if v[0] > floor else [])
    return []


@torch.no_grad()
def tune_lm(asr: Transcriber, valid: Path, lm: str, beam: int, weights: list[float],
            bonuses: list[float], penalties: list[float], vocab: str | None = None,
            widen: int = 2) -> tuple[DecodeSettings, list[GridPoint], GridPoint]:
    """Beam ``beam`` + ``lm`` at every (weight, bonus, penalty) on ``valid``: the settings of
    the point with the lowest WER (ties: CER, then the grid's order), every point with its WER
    / CER (grid order), and the best point. Each pass sends the validation set through the
    model once and decodes each batch's log-probs at every point. When the best weight or bonus
    lies on the grid's edge (a better one may lie beyond), the grid grows one step past that
    edge (weights never below 0) and the new points are decoded, up to ``widen`` times."""
    from ctcasr.lm import NGramLM, read_vocab

    utts = [u for u in read_manifest(valid) if u.text]
    if not utts:
        raise CtcasrError(f"{valid}: no transcribed utterances to tune on")
    base = DecodeOptions(beam=beam, lm=NGramLM.read_arpa(lm),
                         vocab=read_vocab(vocab) if vocab else None)
    grid: list[GridPoint] = []
    todo = [GridPoint(w, b, u) for w, b, u in itertools.product(weights, bonuses, penalties)]
    for _ in range(widen + 1):
        _score_points(asr, utts, base, todo)
        grid += todo
        best = min(grid, key=lambda p: (p.wer, p.cer))
        more_w = widened(weights, best.lm_weight, floor=0.0)
        more_b = widened(bonuses, best.word_bonus)
        if not more_w and not more_b:
            break
        weights, bonuses = weights + more_w, bonuses + more_b
        seen = {(p.lm_weight, p.word_bonus, p.unk_penalty) for p in grid}
        todo = [GridPoint(w, b, u) for w, b, u in itertools.product(weights, bonuses, penalties)
                if (w, b, u) not in seen]
    i = min(range(len(grid)), key=lambda k: (grid[k].wer, grid[k].cer, k))
    p = grid[i]
    note = f"beam {beam} + LM tuned on {valid.name} (WER {p.wer:.2f} %)"
    options = replace(base, lm_weight=p.lm_weight, word_bonus=p.word_bonus,
                      unk_penalty=p.unk_penalty)
    return DecodeSettings("beam", options, note), grid, p


def _score_points(asr: Transcriber, utts: list[Utterance], base: DecodeOptions,
                  grid: list[GridPoint]) -> None:
    """Each point's WER / CER on ``utts``: one pass through the model, every point decoding
    each batch's log-probs."""
    options = [replace(base, lm_weight=p.lm_weight, word_bonus=p.word_bonus,
                       unk_penalty=p.unk_penalty) for p in grid]
    decoders = [make_decoder("beam", o, asr.tokenizer) for o in options]
    text_of, reference = output_text(decoders[0], asr.tokenizer)
    refs: list[str] = []
    hyps: list[list[str]] = [[] for _ in grid]
    sources = [source(u) for u in utts]
    for chunk in range(0, len(sources), CHUNK):
        for kept, lps, lens in asr.log_prob_batches(sources[chunk : chunk + CHUNK]):
            refs += [reference(utts[chunk + k].text) for k in kept]
            for out, decode in zip(hyps, decoders, strict=True):
                out += [text_of(nbest[0].tokens) for nbest in decode(lps, lens)]
    for p, h in zip(grid, hyps, strict=True):
        s = score(refs, h)[0]
        p.wer, p.cer = s.wer, s.cer
