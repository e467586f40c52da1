"""Decode a manifest with a checkpoint: rebuild everything from the checkpoint file alone.

The manifest is streamed in chunks of ``CHUNK`` utterances; each chunk is bucketed by length,
decoded, and its results written (in manifest order) before the next is read, so memory does
not grow with the manifest (only the ids are kept, to refuse duplicates).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ctcasr.checkpoint import load_checkpoint
from ctcasr.config import Config
from ctcasr.data.audio import audio_duration
from ctcasr.data.badinputs import BadInputs
from ctcasr.data.dataset import ASRDataset, make_loader
from ctcasr.data.features import frame_seconds, frames_for_duration
from ctcasr.data.manifest import Utterance, iter_manifest
from ctcasr.data.sampler import BucketBatchSampler
from ctcasr.decode import DecodeOptions, make_decoder, output_text
from ctcasr.decode.settings import DecodeSettings
from ctcasr.decode.timestamps import word_times
from ctcasr.errors import CtcasrError, first_line
from ctcasr.models import CTCModel, build_model
from ctcasr.scoring import ReportWriter, Score
from ctcasr.tokenizer import Tokenizer, tokenizer_from_state

log = logging.getLogger("ctcasr")
CHUNK = 1000  # utterances read, decoded and written at a time
# Padded feature frames per decoding batch, at least: the training config's budget is sized for
# backward's activations, and the batched beam search does each frame's work once for the whole
# batch. speechocean's test set, characters, beam 32 + LM: 84 s with its training budget of 1,500
# frames (3-4 utterances a batch), 36 s with 20,000, the same hypotheses (docs/experiments.md).
DECODE_MAX_FRAMES = 20_000


@dataclass
class Recognizer:
    config: Config
    model: CTCModel
    tokenizer: Tokenizer
    device: torch.device
    decoding: DecodeSettings  # what the checkpoint carries (greedy when nothing)


def load_recognizer(path: str | Path, device: str | torch.device = "cpu") -> Recognizer:
    ckpt = load_checkpoint(path)
    cfg = Config.from_dict(ckpt["config"])
    tokenizer = tokenizer_from_state(ckpt["tokenizer"])
    dim = ckpt["feature_dim"]
    model = build_model(cfg.model, dim, tokenizer.vocab_size, torch.zeros(dim), torch.ones(dim))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CtcasrError(f"{path}: its weights do not fit its own config "
                          f"({first_line(e).rstrip(':. ')})") from None
    device = torch.device(device)
    model.to(device).eval()
    carried = ckpt.get("decoding")
    decoding = DecodeSettings.from_state(carried, str(path)) if carried else DecodeSettings()
    return Recognizer(cfg, model, tokenizer, device, decoding)


@dataclass
class Decoded:
    hyp: str
    nbest: list[tuple[float, str]]
    ctm: list[str]


@torch.no_grad()
def decode_manifest(
    rec: Recognizer,
    manifest: Path,
    out_dir: Path,
    decoder: str = "greedy",
    max_frames: int = 0,
    num_workers: int = 0,
    options: DecodeOptions = DecodeOptions(),
    timestamps: bool = False,
    skip_bad: bool = False,
) -> Score | None:
    """Decode every utterance of ``manifest``; write the report files into ``out_dir``
    (plus ``nbest.txt`` when ``options.nbest > 1``, ``words.ctm`` with ``timestamps``, and
    ``skipped.txt`` with ``skip_bad``: bad utterances are then left out and listed)."""
    decode = make_decoder(decoder, options, rec.tokenizer)
    text_of, reference = output_text(decode, rec.tokenizer)
    bad = BadInputs(skip_bad)
    utts = iter_manifest(manifest, require_text=False, bad=bad)
    total = 0
    with ExitStack() as stack:
        report = stack.enter_context(ReportWriter(out_dir, manifest.name, CHUNK))
        nbest_f = stack.enter_context((out_dir / "nbest.txt").open("w", encoding="utf-8")) \
            if options.nbest > 1 else None
        ctm_f = stack.enter_context((out_dir / "words.ctm").open("w", encoding="utf-8")) \
            if timestamps else None
        bar = stack.enter_context(tqdm(desc="decode", unit="utt", disable=None))
        while chunk := list(itertools.islice(utts, CHUNK)):
            total += len(chunk)
            results = _decode_chunk(rec, chunk, decode, text_of, max_frames, num_workers,
                                    options, timestamps, bad)
            for i, u in enumerate(chunk):
                if i not in results:
                    continue
                r = results[i]
                report.add(u.id, reference(u.text) if u.text else None, r.hyp)
                if nbest_f is not None:
                    nbest_f.writelines(f"{u.id}\t{n}\t{sc:.4f}\t{text}\n"
                                       for n, (sc, text) in enumerate(r.nbest, 1))
                if ctm_f is not None:
                    ctm_f.writelines(line + "\n" for line in r.ctm)
            bar.update(len(chunk))
        if not total:
            raise CtcasrError(f"{manifest}: manifest is empty" +
                              (f" ({bad.count} bad line(s) skipped)" if bad.count else ""))
        score = report.close()
    bad.report(out_dir / "skipped.txt")
    return score


def log_prob_batches(
    rec: Recognizer, utts: list[Utterance], max_frames: int, num_workers: int, bad: BadInputs,
) -> Iterator[tuple[list[int], list[str], torch.Tensor, torch.Tensor]]:
    """Batches of ``utts`` bucketed by length, through the model: (positions in ``utts``, ids,
    log-probs ``[B, T, V]`` on the CPU, output lengths); bad utterances are left out."""
    feat_cfg = rec.config.data.features
    kept, frames = [], []  # positions in utts, feature frames
    for p, u in enumerate(utts):
        try:
            frames.append(frames_for_duration(u.duration or audio_duration(u.audio, u.where),
                                              feat_cfg))
            kept.append(p)
        except CtcasrError as e:
            bad.skip_or_raise(e)
    if not kept:
        return
    dataset = ASRDataset([utts[p] for p in kept], feat_cfg,
                         output_lengths=rec.model.output_lengths, bad=bad)
    budget = max_frames or max(rec.config.data.max_frames_per_batch, DECODE_MAX_FRAMES)
    sampler = BucketBatchSampler(frames, budget, rec.config.data.max_utts_per_batch)
    for batch in make_loader(dataset, sampler, num_workers):
        for why in batch.skipped:
            bad.skip_or_raise(why)
        if not len(batch):
            continue
        b = batch.to(rec.device)
        log_probs, out_lens = rec.model(b.feats, b.feat_lens)
        yield [kept[i] for i in batch.indices], batch.ids, log_probs.cpu(), out_lens.cpu()


def _decode_chunk(
    rec: Recognizer, utts: list[Utterance], decode, text_of, max_frames: int, num_workers: int,
    options: DecodeOptions, timestamps: bool, bad: BadInputs,
) -> dict[int, Decoded]:
    """Decode a list of utterances; results by position in ``utts`` (bad ones left out)."""
    frame_s = frame_seconds(rec.model.frontend.factor, rec.config.data.features)
    out: dict[int, Decoded] = {}
    for positions, ids, log_probs, out_lens in log_prob_batches(rec, utts, max_frames,
                                                                num_workers, bad):
        for j, (p, nbest) in enumerate(zip(positions, decode(log_probs, out_lens),
                                           strict=True)):
            best, ctm = nbest[0].tokens, []
            text = text_of(best)
            if timestamps:
                words = word_times(log_probs[j, : out_lens[j]], best, rec.tokenizer, frame_s,
                                   text)
                ctm = [f"{ids[j]} 1 {w.start:.3f} {w.end - w.start:.3f} {w.word} "
                       f"{w.confidence:.3f}" for w in words]
            nb = [(h.score, text_of(h.tokens)) for h in nbest] if options.nbest > 1 else []
            out[p] = Decoded(text, nb, ctm)
    return out
