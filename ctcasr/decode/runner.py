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
from ctcasr.decode import get_decoder
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
) -> Score | None:
    """Decode every utterance of ``manifest``; write the report files into ``out_dir``."""
    decode = get_decoder(decoder)
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
    loader = make_loader(dataset, sampler, num_workers)
    for batch in tqdm(loader, total=len(sampler), desc="decode", disable=None):
        b = batch.to(rec.device)
        log_probs, out_lens = rec.model(b.feats, b.feat_lens)
        for i, nbest in zip(batch.indices, decode(log_probs.cpu(), out_lens.cpu()), strict=True):
            hyps[i] = rec.tokenizer.decode(nbest[0].tokens)
    refs = [u.text or None for u in utts]
    return write_report(out_dir, [u.id for u in utts], refs, hyps, name=manifest.name)
