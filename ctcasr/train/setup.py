"""What a training run is built from, one named step each: the experiment folder
(:func:`open_experiment`), the data (:func:`build_data`), and the model with its optimizer,
restored from ``last.pt`` on resume and wrapped for DDP (:func:`build_model_and_optimizer`).
The loop that drives them is :mod:`ctcasr.train.trainer`."""

from __future__ import annotations

import contextlib
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ctcasr.checkpoint import load_checkpoint, remove_temporaries
from ctcasr.config import Config, OptimConfig, save_config
from ctcasr.data.augment import Augmenter
from ctcasr.data.badinputs import BadInputs
from ctcasr.data.dataset import ASRDataset, make_loader
from ctcasr.data.featstore import FeatureStore
from ctcasr.data.features import CMVNStats, frames_for_duration
from ctcasr.data.manifest import read_manifest
from ctcasr.data.sampler import BucketBatchSampler
from ctcasr.environment import cpu_model, native_16bit
from ctcasr.errors import CtcasrError
from ctcasr.models import CTCModel, build_model
from ctcasr.models.frontend import Conv2dSubsampling
from ctcasr.tokenizer import Tokenizer, make_tokenizer, tokenizer_from_state
from ctcasr.train import distributed as D
from ctcasr.train.compile import compile_encoder
from ctcasr.train.features import choose_feature_cache, reuse_or_rebuild_store, scan, store_for
from ctcasr.train.finetune import freezing_summary, init_from, log_init
from ctcasr.train.monitor import trim_log
from ctcasr.train.schedule import check_schedule, lr_at
from ctcasr.train.state import TrainState, check_compatible, set_rng_state

log = logging.getLogger("ctcasr")


@dataclass
class Data:
    tokenizer: Tokenizer
    train: ASRDataset
    valid: ASRDataset
    sampler: BucketBatchSampler  # the training batches of every epoch (all processes)
    train_loader: Any
    valid_loader: Any
    stores: dict[str, FeatureStore | None]  # the feature store of each set, when on disk
    stats: CMVNStats  # of the training set (a new run's; empty on resume)
    unreadable: list[list[str]]  # utterances left out (--skip-bad), see TrainState
    bad: BadInputs
    total_steps: int  # optimizer steps of the whole run
    group: int  # batches of the epoch's global list per optimizer step


@dataclass
class Trainee:
    model: CTCModel
    net: torch.nn.Module  # the model, or its DDP wrapper: what the steps call
    optimizer: torch.optim.Optimizer
    autocast: contextlib.AbstractContextManager | None
    scaler: torch.amp.GradScaler | None
    state: TrainState


def open_experiment(cfg: Config, exp_dir: Path, resume: bool,
                    dist: D.DistInfo) -> dict[str, Any] | None:
    """The checkpoint to resume from (None: a new run, whose config.yaml is written); stale
    temporary files of an interrupted save are removed."""
    if dist.is_main:
        for p in remove_temporaries(exp_dir):
            log.info("removed %s (a checkpoint that was being written when a run stopped)", p)
    ckpt = _resume_checkpoint(cfg, exp_dir, resume)
    if ckpt is None and dist.is_main:
        save_config(cfg, exp_dir / "config.yaml")  # also marks the folder as holding a run
    return ckpt


def build_data(cfg: Config, train_manifest: Path, valid_manifest: Path, exp_dir: Path,
               ckpt: dict[str, Any] | None, init: dict[str, Any] | None, skip_bad: bool,
               dist: D.DistInfo, device: torch.device) -> Data:
    """Manifests, tokenizer, datasets (every utterance read once before the first step: the
    CMVN statistics, and no bad input met hours later), the feature store, samplers, loaders."""
    tc, dcfg, feat_cfg = cfg.train, cfg.data, cfg.data.features
    bad = BadInputs(skip_bad)
    train_utts = read_manifest(train_manifest, bad=bad)
    valid_utts = read_manifest(valid_manifest, bad=bad)
    tokenizer = _tokenizer(cfg, ckpt, init, train_utts, dist)
    views = 2 if tc.cr_ctc_weight > 0 else 1  # CR-CTC: two copies of each utterance
    augmenter = Augmenter(dcfg.augment, feat_cfg.sample_rate, tc.seed, views) \
        if dcfg.augment.enabled or views > 1 else None
    lengths = Conv2dSubsampling(feat_cfg.num_mel_bins, cfg.model.frontend).output_lengths
    speeds = [1.0] + [f for f in dcfg.augment.speeds if f != 1.0]  # the variants stored
    cache = choose_feature_cache(dcfg, train_utts, len(speeds), exp_dir) if dist.is_main else ""
    cache = D.broadcast(cache, dist)
    train_ds = ASRDataset(train_utts, feat_cfg, tokenizer, cache == "memory", augmenter,
                          lengths, bad)
    valid_ds = ASRDataset(valid_utts, feat_cfg, tokenizer, cache == "memory", None, lengths,
                          bad)
    sets = {"train": (train_ds, speeds), "valid": (valid_ds, [1.0])}
    stores = {name: store_for(ds, exp_dir / "feats" / name, sp) if cache == "disk" else None
              for name, (ds, sp) in sets.items()}
    stats = CMVNStats.empty(feat_cfg.num_mel_bins)
    if ckpt is None:  # read everything once
        unreadable = [[name, *x] for name, (ds, sp) in sets.items()
                      for x in scan(ds, dcfg.num_workers, dist, bad,
                                    stats if name == "train" else None, stores[name], sp)]
    else:  # the same utterances as before
        unreadable = ckpt["train_state"]["state"].get("unreadable", [])
        for _, _, why in unreadable:
            bad.skip_or_raise(why)
        for name, (ds, sp) in sets.items():
            if stores[name] is not None:
                reuse_or_rebuild_store(ds, stores[name], sp, dcfg.num_workers, dist)
    train_ds, valid_ds = (_without(ds, name, unreadable) for name, (ds, _) in sets.items())
    if dist.is_main:
        bad.report(exp_dir / "skipped.txt")
    sampler, train_loader, valid_loader, total_steps, group = _loaders(
        cfg, train_ds, valid_ds, augmenter is not None, dist, device)
    return Data(tokenizer, train_ds, valid_ds, sampler, train_loader, valid_loader, stores,
                stats, unreadable, bad, total_steps, group)


def build_model_and_optimizer(cfg: Config, data: Data, ckpt: dict[str, Any] | None,
                              init: dict[str, Any] | None, exp_dir: Path, dist: D.DistInfo,
                              device: torch.device) -> Trainee:
    """The model (CMVN from the training set, or fine-tuned from ``init``), AdamW, mixed
    precision, the state restored from ``ckpt`` when resuming, the DDP wrapper."""
    tc, feat_cfg = cfg.train, cfg.data.features
    torch.manual_seed(tc.seed)
    random.seed(tc.seed + dist.rank)
    if ckpt is None:
        mean, std = data.stats.mean_std()
    else:
        dim = ckpt["feature_dim"]
        mean, std = torch.zeros(dim), torch.ones(dim)  # overwritten by the state dict
    model = build_model(cfg.model, feat_cfg.num_mel_bins, data.tokenizer.vocab_size, mean, std)
    if init is not None:
        report = init_from(model, init, init["tokenizer"] == data.tokenizer.state_dict(),
                           Path(tc.init))
        if dist.is_main:
            log_init(report, Path(tc.init), init["config"].get("data", {}).get("features", {}),
                     feat_cfg)
    if (frozen := freezing_summary(model, tc, data.total_steps)) and dist.is_main:
        log.info(frozen)
    model.to(device)
    if dist.enabled:
        torch.manual_seed(tc.seed + dist.rank)  # dropout differs between processes
    optimizer = adamw(model, cfg.optim, lr_at(1, cfg.scheduler, data.total_steps))
    if tc.compile:
        compile_encoder(model)
    autocast, scaler = _amp(tc.amp, device)
    state = TrainState(unreadable=data.unreadable)
    if ckpt is not None:
        state = _restore(ckpt, model, optimizer, scaler, exp_dir, dist)
    if dist.is_main and ckpt is None:
        (exp_dir / "train_log.jsonl").unlink(missing_ok=True)
    elif dist.is_main:  # the records of steps after the checkpoint are written again
        trim_log(exp_dir / "train_log.jsonl", state.step, state.epoch)
    net: torch.nn.Module = model
    if dist.enabled:
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,
        )
    log.info("model %s: %.2f M parameters, vocab %d, device %s, %d process(es), %d step(s)",
             cfg.model.encoder, sum(p.numel() for p in model.parameters()) / 1e6,
             data.tokenizer.vocab_size, device, dist.world_size, data.total_steps)
    return Trainee(model, net, optimizer, autocast, scaler, state)


# --------------------------------------------------------------------------- the parts
def _tokenizer(cfg: Config, ckpt: dict[str, Any] | None, init: dict[str, Any] | None,
               train_utts: list, dist: D.DistInfo) -> Tokenizer:
    """A resumed run's, the init checkpoint's (``train.init_tokenizer``), or trained on the
    training transcripts (by the main process, sent to the others)."""
    if ckpt is not None:
        return tokenizer_from_state(ckpt["tokenizer"])
    if init is not None and cfg.train.init_tokenizer:
        return tokenizer_from_state(init["tokenizer"])
    state = None
    if dist.is_main:
        state = make_tokenizer(cfg.tokenizer, (u.text for u in train_utts)).state_dict()
    return tokenizer_from_state(D.broadcast(state, dist))


def _loaders(cfg: Config, train_ds: ASRDataset, valid_ds: ASRDataset, tag_epoch: bool,
             dist: D.DistInfo, device: torch.device):
    """(the training sampler, the two loaders, the run's optimizer steps, batches per step)"""
    tc, dcfg, feat_cfg = cfg.train, cfg.data, cfg.data.features
    pad = dcfg.pad_to_multiple_of  # the samplers' budget and the loaders' collate both pad
    shard = dict(rank=dist.rank, world_size=dist.world_size, pad_to=pad)
    sampler = BucketBatchSampler(
        [frames_for_duration(u.duration, feat_cfg) for u in train_ds.utts],
        dcfg.max_frames_per_batch, dcfg.max_utts_per_batch,
        shuffle=True, seed=tc.seed, sort_noise=dcfg.sort_noise,
        sortagrad_epochs=dcfg.sortagrad_epochs, tag_epoch=tag_epoch, **shard,
    )
    valid_sampler = BucketBatchSampler(
        [frames_for_duration(u.duration, feat_cfg) for u in valid_ds.utts],
        dcfg.max_frames_per_batch, dcfg.max_utts_per_batch, **shard,
    )
    pin = device.type == "cuda"
    group = dist.world_size * tc.accum_grad  # batches of the global list per optimizer step
    total_steps = tc.max_steps or sum(
        math.ceil(len(sampler.batches(e)) / group) for e in range(tc.epochs)
    )
    check_schedule(cfg.scheduler, total_steps)
    return (sampler, make_loader(train_ds, sampler, dcfg.num_workers, pin, pad),
            make_loader(valid_ds, valid_sampler, dcfg.num_workers, pin, pad), total_steps, group)


def _restore(ckpt: dict[str, Any], model: CTCModel, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler | None, exp_dir: Path, dist: D.DistInfo) -> TrainState:
    model.load_state_dict(ckpt["model"])
    ts = ckpt["train_state"]
    optimizer.load_state_dict(ts["optimizer"])
    if scaler is not None and "scaler" in ts:
        scaler.load_state_dict(ts["scaler"])
    state = TrainState(**ts["state"])
    rngs = ts["rng"]
    if len(rngs) == dist.world_size:
        set_rng_state(rngs[dist.rank])
    else:
        log.warning("resuming on %d processes a run saved from %d: RNG states not restored",
                    dist.world_size, len(rngs))
    log.info("resumed from %s at epoch %d, batch %d, step %d", exp_dir / "last.pt",
             state.epoch + 1, state.batch_in_epoch, state.step)
    return state


def _amp(mode: str, device: torch.device):
    """(autocast context or None, GradScaler or None) for ``train.amp`` on ``device``.

    On CUDA, bf16 or fp16 (with a gradient scaler). On a CPU, bf16 only where it computes in it
    natively (AVX512-BF16 / AMX-BF16: a Conformer step 1.3x on one batch shape, the speechocean
    recipe's training 1.1-1.3x with its batches padded to 32 frames: docs/training.md);
    elsewhere torch emulates it, slower than fp32, and CPU fp16 is slower still even with
    AVX512-FP16 (60x measured), so both train in fp32 with a warning that says why. ``auto``:
    bf16 where the device computes in it, else fp32 quietly (what a recipe sets to run on any
    machine)."""
    if mode == "auto":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else \
            device.type == "cpu" and native_16bit()["bf16"]
        if not native:
            log.info("train.amp=auto: fp32 (%s does not compute in bf16 natively)",
                     cpu_model() if device.type == "cpu" else device)
            return None, None
        mode = "bf16"
    if mode == "none":
        return None, None
    if device.type == "cuda":
        dtype = torch.bfloat16 if mode == "bf16" else torch.float16
        autocast = torch.autocast(device_type="cuda", dtype=dtype)
        return autocast, torch.amp.GradScaler("cuda") if mode == "fp16" else None
    if device.type == "cpu" and mode == "bf16" and native_16bit()["bf16"]:
        log.info("train.amp=bf16: bf16 autocast on this CPU (%s: AVX512-BF16 / AMX-BF16)",
                 cpu_model())
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16), None
    why = ("a CPU trains fp16 slower than fp32" if mode == "fp16" else
           f"this CPU ({cpu_model()}) has no AVX512-BF16 / AMX-BF16, torch would emulate bf16")
    log.warning("train.amp=%s ignored on %s: %s; training in fp32", mode, device, why)
    return None, None


def _without(dataset: ASRDataset, name: str, unreadable: list[list[str]]) -> ASRDataset:
    """``dataset`` without the utterances of set ``name`` in ``unreadable`` (see TrainState)."""
    drop = {uid for s, uid, _ in unreadable if s == name}
    out = dataset.subset(i for i, u in enumerate(dataset.utts) if u.id not in drop)
    if not len(out):
        raise CtcasrError(f"no usable {name} utterance left (--skip-bad skipped them all)")
    return out


def _resume_checkpoint(cfg: Config, exp_dir: Path, resume: bool) -> dict[str, Any] | None:
    last = exp_dir / "last.pt"
    if not resume:
        if last.exists():
            raise CtcasrError(
                f"{exp_dir}: already holds a run (last.pt); pass --resume to continue it "
                "or choose another experiment folder"
            )
        return None
    if not last.exists():
        if (exp_dir / "config.yaml").exists():  # stopped before its first checkpoint
            log.info("%s: no checkpoint yet; starting the run from the beginning", exp_dir)
            return None
        raise CtcasrError(f"{last}: nothing to resume (no checkpoint in the experiment folder)")
    ckpt = load_checkpoint(last)
    if "train_state" not in ckpt:
        raise CtcasrError(f"{last}: has no training state to resume from")
    check_compatible(ckpt["config"], cfg, str(last))
    return ckpt


def adamw(model: torch.nn.Module, oc: OptimConfig, lr: float) -> torch.optim.AdamW:
    """AdamW in ``optim.impl``'s implementation; ``auto`` is the fused one (one kernel per
    parameter and step: 5-7 % of a training step faster than torch's default on the CPU, a loop
    of small ops per parameter), or foreach where the device has no fused AdamW."""
    kw = {"lr": lr, "betas": oc.betas, "eps": oc.eps, "weight_decay": oc.weight_decay}
    if oc.impl == "auto":
        try:
            return torch.optim.AdamW(model.parameters(), fused=True, **kw)
        except RuntimeError:  # a device without the fused kernel
            return torch.optim.AdamW(model.parameters(), foreach=True, **kw)
    return torch.optim.AdamW(model.parameters(), foreach={"foreach": True, "loop": False}.get(
        oc.impl), fused=True if oc.impl == "fused" else None, **kw)


__all__ = ["Data", "Trainee", "adamw", "build_data", "build_model_and_optimizer",
           "open_experiment"]
