"""Before the first step: read every utterance once, and decide where features live in training.

The pass (:func:`scan`) computes the CMVN statistics, finds every bad input (so none can fail
hours later) and, with ``data.feature_cache: disk`` (what ``auto`` chooses when there is room),
writes each utterance's fbank at every speed factor to a :class:`FeatureStore` in
``EXP_DIR/feats/``, which training then reads per batch. Memory stays one batch per process,
whatever the corpus size; the store is reused by ``--resume`` and removed when training ends.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from ctcasr.config import DataConfig
from ctcasr.data.badinputs import BadInputs
from ctcasr.data.dataset import ASRDataset, read_each
from ctcasr.data.featstore import FeatureStore, fingerprint
from ctcasr.data.features import CMVNStats, frames_for_duration
from ctcasr.data.manifest import Utterance
from ctcasr.train import distributed as D

log = logging.getLogger("ctcasr")
MB = 2**20


def feature_bytes(utts: Sequence[Utterance], dcfg: DataConfig, variants: int) -> int:
    """float32 fbank of ``utts`` at ``variants`` speed factors (speed 0.9 gives 1/0.9 frames;
    counted as 1, the average of a symmetric set)."""
    frames = sum(frames_for_duration(u.duration, dcfg.features) for u in utts)
    return frames * dcfg.features.num_mel_bins * 4 * variants


def choose_feature_cache(dcfg: DataConfig, utts: Sequence[Utterance], variants: int,
                         exp_dir: Path) -> str:
    """``data.feature_cache`` with ``auto`` resolved; logs the choice and its memory."""
    mode = "none" if dcfg.cache_features is False else dcfg.feature_cache
    size = feature_bytes(utts, dcfg, variants)
    hours = sum(u.duration for u in utts) / 3600
    what = f"{hours:.2f} h x {variants} speed factor(s) = {size / MB:.0f} MB of fbank"
    if mode == "auto":
        free = shutil.disk_usage(exp_dir).free
        mode = "disk" if free > 1.1 * size + 2**30 else "none"
        if mode == "none":
            log.warning("features: %s, but %s has only %.0f MB free: computing them for every "
                        "batch instead of storing them", what, exp_dir, free / MB)
    procs = 1 + dcfg.num_workers
    if mode == "disk":
        log.info("features (disk): %s, written once to %s/feats; in memory: one batch per "
                 "process, whatever the corpus size", what, exp_dir)
    elif mode == "memory":
        log.info("features (memory): %s kept in memory in each of %d process(es): about "
                 "%.0f MB, and growing with the corpus (data.feature_cache: disk does not)",
                 what, procs, procs * size / MB)
    else:
        log.info("features (none): computed for every batch (%s; nothing kept)", what)
    return mode


def store_for(dataset: ASRDataset, folder: Path, speeds: Sequence[float]) -> FeatureStore:
    settings = json.dumps([asdict(dataset.feat_cfg), list(speeds)], sort_keys=True)
    return FeatureStore(folder, len(dataset), len(speeds), dataset.feat_cfg.num_mel_bins,
                        fingerprint(dataset.utts, settings))


def scan(
    dataset: ASRDataset, num_workers: int, dist: D.DistInfo, bad: BadInputs,
    stats: CMVNStats | None = None, store: FeatureStore | None = None,
    speeds: Sequence[float] = (1.0,),
) -> list[tuple[str, str]]:
    """Read every utterance once (filling the in-memory cache if the dataset has one), adding
    its features to ``stats`` and, with a ``store``, writing them at each of ``speeds`` (the
    first is 1.0) to it and attaching it to ``dataset``. Returns ``(id, why)`` of the bad
    ones, which ``bad`` raises unless skipping. Under DDP each process reads its share; the
    sums, the bad ones and the store's parts are gathered."""
    mine = list(range(dist.rank, len(dataset), dist.world_size))
    writer = store.open_writer(dist.rank) if store is not None else None
    found = []
    for i, feats, why in tqdm(read_each(dataset, mine, num_workers, speeds if store else (1.0,)),
                              total=len(mine), desc="read", leave=False,
                              disable=None if dist.is_main else True):
        if feats is None:
            found.append((i, dataset.utts[i].id, why))
            if writer is not None:
                writer.write(i, [])  # a row that is never read
            continue
        if stats is not None:
            stats.add(feats[0])
        if writer is not None:
            writer.write(i, feats)
    if writer is not None:
        writer.close()
    if dist.enabled and stats is not None:
        sums = torch.cat([stats.sum, stats.sum_sq, torch.tensor([float(stats.count)],
                                                                dtype=torch.float64)])
        D.all_reduce_sum(sums, dist)
        d = stats.sum.shape[0]
        stats.sum, stats.sum_sq, stats.count = sums[:d], sums[d : 2 * d], int(sums[-1])
    found = sorted(x for part in D.all_gather(found, dist) for x in part)  # also a barrier
    if store is not None:
        if dist.is_main:
            store.mark_complete(dist.world_size)
        D.all_gather(None, dist)
        store.load()
        dataset.use_store(store, list(speeds))
    for _, _, why in found:
        bad.skip_or_raise(why)
    return [(uid, why) for _, uid, why in found]


def reuse_or_rebuild_store(dataset: ASRDataset, store: FeatureStore, speeds: Sequence[float],
                           num_workers: int, dist: D.DistInfo) -> None:
    """On ``--resume``: attach the store the run wrote if it is complete and for the same
    utterances and settings; otherwise write it again (bad inputs were counted already)."""
    if store.load():
        dataset.use_store(store, list(speeds))
        log.info("features: reusing %s (%.0f MB)", store.folder, store.nbytes() / MB)
        return
    scan(dataset, num_workers, dist, BadInputs(skip=True), None, store, speeds)


def compute_cmvn(
    dataset: ASRDataset, num_workers: int, dist: D.DistInfo = D.DistInfo()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global mean / std per fbank bin over a whole dataset (one pass; fills its cache)."""
    stats = CMVNStats.empty(dataset.feat_cfg.num_mel_bins)
    scan(dataset, num_workers, dist, BadInputs(), stats)
    return stats.mean_std()
