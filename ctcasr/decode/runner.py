"""Decode a manifest with a checkpoint: rebuild everything from the checkpoint file alone."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ctcasr.checkpoint import load_checkpoint
from ctcasr.config import Config
from ctcasr.data.audio import audio_duration
from ctcasr.data.dataset import ASRDataset, make_loader
from ctcasr.data.features import frames_for_duration
from ctcasr.data.manifest import read_manifest
from ctcasr.data.sampler import BucketBatchSampler
from ctcasr.decode import DecodeOptions, make_decoder
from ctcasr.decode.timestamps import word_times
from ctcasr.models import CTCModel, build_model
from ctcasr.scoring import Score, write_report
from ctcasr.tokenizer import Tokenizer, tokenizer_from_state

log = logging.getLogger("ctcasr")


@dataclass
class Recognizer:
    config: Config
    model: CTCModel
    tokenizer: Tokenizer
    device: torch.device


def load_recognizer(path: str | Path, device: str | torch.device = "cpu") -> Recognizer:
    ckpt = load_checkpoint(path)
    cfg = Config.from_dict(ckpt["config"])
    tokenizer = tokenizer_from_state(ckpt["tokenizer"])
    dim = ckpt["feature_dim"]
    model = build_model(cfg.model, dim, tokenizer.vocab_size, torch.zeros(dim), torch.ones(dim))
    model.load_state_dict(ckpt["model"])
    device = torch.device(device)
    model.to(device).eval()
    return Recognizer(cfg, model, tokenizer, device)


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
) -> Score | None:
    """Decode every utterance of ``manifest``; write the report files into ``out_dir``
    (plus ``nbest.txt`` when ``options.nbest > 1``, ``words.ctm`` with ``timestamps``)."""
    decode = make_decoder(decoder, options, rec.tokenizer)
    frame_s = rec.model.frontend.factor * rec.config.data.features.frame_shift_ms / 1000
    utts = read_manifest(manifest, require_text=False)
    feat_cfg = rec.config.data.features
    frames = [
        frames_for_duration(u.duration or audio_duration(u.audio, u.where), feat_cfg) for u in utts
    ]
    dataset = ASRDataset(utts, feat_cfg, tokenizer=None)
    sampler = BucketBatchSampler(
        frames, max_frames or rec.config.data.max_frames_per_batch,
        rec.config.data.max_utts_per_batch,
    )
    hyps: list[str] = [""] * len(utts)
    nbests: list[list[tuple[float, str]]] = [[] for _ in utts]
    ctm: list[list[str]] = [[] for _ in utts]
    loader = make_loader(dataset, sampler, num_workers)
    for batch in tqdm(loader, total=len(sampler), desc="decode", disable=None):
        b = batch.to(rec.device)
        log_probs, out_lens = rec.model(b.feats, b.feat_lens)
        log_probs, out_lens = log_probs.cpu(), out_lens.cpu()
        results = decode(log_probs, out_lens)
        for j, (i, nbest) in enumerate(zip(batch.indices, results, strict=True)):
            hyps[i] = rec.tokenizer.decode(nbest[0].tokens)
            if options.nbest > 1:
                nbests[i] = [(h.score, rec.tokenizer.decode(h.tokens)) for h in nbest]
            if timestamps:
                words = word_times(log_probs[j, : out_lens[j]], nbest[0].tokens, rec.tokenizer,
                                   frame_s)
                ctm[i] = [f"{utts[i].id} 1 {w.start:.3f} {w.end - w.start:.3f} {w.word} "
                          f"{w.confidence:.3f}" for w in words]
    out_dir.mkdir(parents=True, exist_ok=True)
    if options.nbest > 1:
        with (out_dir / "nbest.txt").open("w", encoding="utf-8") as f:
            for u, nb in zip(utts, nbests, strict=True):
                f.writelines(f"{u.id}\t{r}\t{sc:.4f}\t{text}\n" for r, (sc, text) in
                             enumerate(nb, 1))
    if timestamps:
        (out_dir / "words.ctm").write_text("".join(line + "\n" for c in ctm for line in c))
    refs = [u.text or None for u in utts]
    return write_report(out_dir, [u.id for u in utts], refs, hyps, name=manifest.name)
