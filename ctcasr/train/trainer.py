"""The training loop: one function, :func:`train`, driven by a :class:`Config`.

Files in the experiment folder (written by the main process only)::

    config.yaml        the resolved config
    train_log.jsonl    one JSON object per log interval / validation (+ tensorboard/ if installed)
    train.log          human-readable log
    last.pt            everything needed to resume (written each epoch and every
                       ``train.save_every_steps`` steps)
    epoch-N.pt         weights after epoch N (the newest ``train.keep_epochs`` are kept, and
                       those ``train.average`` will need)
    best.pt            the epoch with the lowest validation WER (ties: lower loss)
    model.pt           the model to decode with, written at the end: best.pt, or the average
                       of ``train.average`` epoch checkpoints
    skipped.txt        with ``--skip-bad``: the bad inputs left out, one error line each
    feats/             while training, with ``data.feature_cache`` disk (the default where there
                       is room): the fbank of every utterance (``ctcasr.train.features``)

An optimizer step consumes ``world_size x accum_grad`` consecutive batches of the epoch's global
batch list (``ctcasr.train.distributed``); the loss is the CTC loss summed over their utterances
and divided by their number, so accumulating k batches, or training on k processes, makes the
same update as one k-times larger batch.

Resuming is exact: the sampler's batches and the augmentation are pure functions of
(seed, epoch), the checkpoint stores how many batches of the current epoch were consumed, the
optimizer (and fp16 scaler) state, the step and every process's RNG states, so a resumed run
produces bitwise the same weights as an uninterrupted one. Killed at any moment (kill -9
included), a run continues with ``--resume`` from its last checkpoint, to the same weights;
killed before its first checkpoint, ``--resume`` starts it again (docs/reliability.md).

Bad inputs stop the run before training with a one-line error, or under ``skip_bad`` are left
out and listed in ``skipped.txt``: every training and validation utterance is read once before
the first step (the pass that computes the CMVN statistics), so none can fail hours later.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ctcasr.checkpoint import (
    copy_checkpoint,
    load_checkpoint,
    remove_temporaries,
    save_checkpoint,
)
from ctcasr.config import Config, save_config
from ctcasr.data.augment import Augmenter
from ctcasr.data.badinputs import BadInputs
from ctcasr.data.dataset import ASRDataset, Batch, make_loader
from ctcasr.data.features import CMVNStats, frames_for_duration
from ctcasr.data.manifest import read_manifest
from ctcasr.data.sampler import BucketBatchSampler
from ctcasr.decode import greedy_search
from ctcasr.errors import CtcasrError
from ctcasr.models import CTCModel, build_model
from ctcasr.models.frontend import Conv2dSubsampling
from ctcasr.scoring import score
from ctcasr.tokenizer import Tokenizer, make_tokenizer, tokenizer_from_state
from ctcasr.train import distributed as D
from ctcasr.train.average import average_checkpoints, select_epochs
from ctcasr.train.features import choose_feature_cache, reuse_or_rebuild_store, scan, store_for
from ctcasr.train.finetune import (
    freezing_summary,
    frozen_parameters,
    init_from,
    load_init,
    log_init,
)
from ctcasr.train.monitor import Meter, TrainLog, trim_log
from ctcasr.train.schedule import check_schedule, lr_at
from ctcasr.train.state import TrainState, check_compatible, rng_state, set_rng_state
from ctcasr.train.threads import ThreadGovernor

log = logging.getLogger("ctcasr")


def train(
    cfg: Config, train_manifest: Path, valid_manifest: Path, exp_dir: Path, resume: bool = False,
    skip_bad: bool = False,
) -> TrainState:
    """Train (or resume training) a model; returns the final training state.

    Under ``torchrun`` every process calls this; they train one model together (DDP)."""
    dist, device = D.init_distributed(cfg.train.device)
    handler = None
    level = log.level
    if dist.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(exp_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    else:
        log.setLevel(logging.WARNING)
    threads = torch.get_num_threads()
    try:
        D.check_shared_dir(exp_dir, dist)
        return _train(cfg, train_manifest, valid_manifest, exp_dir, resume, skip_bad, dist,
                      device)
    finally:
        torch.set_num_threads(threads)  # train.num_threads or the governor changed them
        log.setLevel(level)
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        D.shutdown(dist)


@dataclass
class StepResult:
    loss: float  # CTC loss per utterance over the whole step (all processes)
    grad_norm: float  # before clipping
    ok: bool  # False: non-finite loss or gradient, the step was skipped
    infeasible: list[str]  # this process's utterances too short for their labels


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[Batch],
    step_utts: int,
    max_norm: float,
    world_size: int = 1,
    autocast: contextlib.AbstractContextManager | None = None,
    scaler: torch.amp.GradScaler | None = None,
    frozen: list[torch.nn.Parameter] | None = None,
    inter_weight: float = 0.0,
) -> StepResult:
    """One optimizer step over this process's ``batches`` (gradient accumulation).

    ``step_utts`` is the number of utterances in the step over all processes; each process
    scales its loss by ``world_size / step_utts`` because DDP averages gradients over processes.
    ``frozen`` parameters lose their gradients before clipping: the step leaves them as they are.
    The loss is the model's (:class:`ctcasr.models.ctc.CTCOutput`; intermediate CTC layers
    weighted by ``inter_weight``).
    """
    ddp = isinstance(model, DistributedDataParallel)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), dtype=torch.float64)
    infeasible: list[str] = []
    for j, batch in enumerate(batches):
        last = j == len(batches) - 1
        sync = contextlib.nullcontext() if last or not ddp else model.no_sync()
        with sync:
            with autocast or contextlib.nullcontext():
                out = model(batch.feats, batch.feat_lens, batch.tokens, batch.token_lens,
                            inter_weight)
            infeasible += [batch.ids[i] for i in out.infeasible.nonzero().flatten().tolist()]
            loss = out.loss.sum()
            scaled = loss * (world_size / step_utts)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        loss_sum += loss.detach().double().cpu()
    if world_size > 1:
        torch.distributed.all_reduce(loss_sum)
    for p in frozen or ():
        p.grad = None
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    loss_val = float(loss_sum) / step_utts
    ok = math.isfinite(grad_norm) and math.isfinite(loss_val)
    if scaler is not None:
        scaler.step(optimizer)  # skips the update itself when gradients overflowed
        scaler.update()
        ok = ok or math.isfinite(loss_val)  # an fp16 overflow is the scaler's business
    elif ok:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_val, grad_norm, ok, infeasible)


def _train(
    cfg: Config, train_manifest: Path, valid_manifest: Path, exp_dir: Path, resume: bool,
    skip_bad: bool, dist: D.DistInfo, device: torch.device,
) -> TrainState:
    tc, dcfg, feat_cfg = cfg.train, cfg.data, cfg.data.features
    if tc.num_threads > 0:
        torch.set_num_threads(tc.num_threads)
    governor = ThreadGovernor(logger=log) if tc.num_threads == 0 and device.type == "cpu" \
        else None
    if dist.is_main:
        for p in remove_temporaries(exp_dir):
            log.info("removed %s (a checkpoint that was being written when a run stopped)", p)
    ckpt = _resume_checkpoint(cfg, exp_dir, resume)
    if ckpt is None and dist.is_main:
        save_config(cfg, exp_dir / "config.yaml")  # also marks the folder as holding a run

    init = load_init(Path(tc.init)) if tc.init and ckpt is None else None  # fails early
    bad = BadInputs(skip_bad)
    train_utts = read_manifest(train_manifest, bad=bad)
    valid_utts = read_manifest(valid_manifest, bad=bad)
    if ckpt is not None:
        tokenizer = tokenizer_from_state(ckpt["tokenizer"])
    elif init is not None and tc.init_tokenizer:
        tokenizer = tokenizer_from_state(init["tokenizer"])
    else:
        tok_state = None
        if dist.is_main:
            tok_state = make_tokenizer(cfg.tokenizer, (u.text for u in train_utts)).state_dict()
        tokenizer = tokenizer_from_state(D.broadcast(tok_state, dist))
    augmenter = Augmenter(dcfg.augment, feat_cfg.sample_rate, tc.seed) if dcfg.augment.enabled \
        else None
    lengths = Conv2dSubsampling(feat_cfg.num_mel_bins, cfg.model.frontend).output_lengths
    speeds = [1.0] + [f for f in dcfg.augment.speeds if f != 1.0]  # the variants stored
    cache = choose_feature_cache(dcfg, train_utts, len(speeds), exp_dir) if dist.is_main else ""
    cache = D.broadcast(cache, dist)
    train_ds = ASRDataset(train_utts, feat_cfg, tokenizer, cache == "memory", augmenter,
                          lengths, bad)
    valid_ds = ASRDataset(valid_utts, feat_cfg, tokenizer, cache == "memory", None, lengths,
                          bad)
    stores = {name: store_for(ds, exp_dir / "feats" / name, sp) if cache == "disk" else None
              for name, ds, sp in (("train", train_ds, speeds), ("valid", valid_ds, [1.0]))}
    stats = CMVNStats.empty(feat_cfg.num_mel_bins)
    if ckpt is None:  # read everything once: CMVN statistics, and no bad input met later
        unreadable = [["train", *x] for x in scan(train_ds, dcfg.num_workers, dist, bad, stats,
                                                  stores["train"], speeds)]
        unreadable += [["valid", *x] for x in scan(valid_ds, dcfg.num_workers, dist, bad,
                                                   None, stores["valid"])]
    else:  # the same utterances as before
        unreadable = ckpt["train_state"]["state"].get("unreadable", [])
        for _, _, why in unreadable:
            bad.skip_or_raise(why)
        for ds, store, sp in ((train_ds, stores["train"], speeds),
                              (valid_ds, stores["valid"], [1.0])):
            if store is not None:
                reuse_or_rebuild_store(ds, store, sp, dcfg.num_workers, dist)
    train_ds, valid_ds = (_without(ds, name, unreadable) for ds, name in
                          ((train_ds, "train"), (valid_ds, "valid")))
    if dist.is_main:
        bad.report(exp_dir / "skipped.txt")
    shard = dict(rank=dist.rank, world_size=dist.world_size)
    sampler = BucketBatchSampler(
        [frames_for_duration(u.duration, feat_cfg) for u in train_ds.utts],
        dcfg.max_frames_per_batch, dcfg.max_utts_per_batch,
        shuffle=True, seed=tc.seed, sort_noise=dcfg.sort_noise,
        sortagrad_epochs=dcfg.sortagrad_epochs, tag_epoch=augmenter is not None, **shard,
    )
    valid_sampler = BucketBatchSampler(
        [frames_for_duration(u.duration, feat_cfg) for u in valid_ds.utts],
        dcfg.max_frames_per_batch, dcfg.max_utts_per_batch, **shard,
    )
    pin = device.type == "cuda"
    train_loader = make_loader(train_ds, sampler, dcfg.num_workers, pin)
    valid_loader = make_loader(valid_ds, valid_sampler, dcfg.num_workers, pin)

    group = dist.world_size * tc.accum_grad  # batches of the global list per optimizer step
    total_steps = tc.max_steps or sum(
        math.ceil(len(sampler.batches(e)) / group) for e in range(tc.epochs)
    )
    check_schedule(cfg.scheduler, total_steps)

    torch.manual_seed(tc.seed)
    random.seed(tc.seed + dist.rank)
    if ckpt is None:
        mean, std = stats.mean_std()
    else:
        dim = ckpt["feature_dim"]
        mean, std = torch.zeros(dim), torch.ones(dim)  # overwritten by the state dict
    model = build_model(cfg.model, feat_cfg.num_mel_bins, tokenizer.vocab_size, mean, std)
    if init is not None:
        report = init_from(model, init, init["tokenizer"] == tokenizer.state_dict(),
                           Path(tc.init))
        if dist.is_main:
            log_init(report, Path(tc.init), init["config"].get("data", {}).get("features", {}),
                     feat_cfg)
    if (frozen := freezing_summary(model, tc, total_steps)) and dist.is_main:
        log.info(frozen)
    model.to(device)
    if dist.enabled:
        torch.manual_seed(tc.seed + dist.rank)  # dropout differs between processes
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr_at(1, cfg.scheduler, total_steps), betas=cfg.optim.betas,
        eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay,
    )
    autocast, scaler = _amp(tc.amp, device)
    state = TrainState(unreadable=unreadable)
    if ckpt is not None:
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
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.2f M parameters, vocab %d, device %s, %d process(es), %d step(s)",
             cfg.model.encoder, n_params / 1e6, tokenizer.vocab_size, device, dist.world_size,
             total_steps)

    def checkpoint(with_state: bool) -> dict[str, Any]:
        """Collective under DDP (gathers RNG states): call on every process."""
        out: dict[str, Any] = {
            "config": cfg.to_dict(), "model": model.state_dict(),
            "tokenizer": tokenizer.state_dict(), "feature_dim": feat_cfg.num_mel_bins,
            "vocab_size": tokenizer.vocab_size,
        }
        if with_state:
            out["train_state"] = {
                "optimizer": optimizer.state_dict(), "state": asdict(state),
                "rng": D.all_gather(rng_state(), dist),
            }
            if scaler is not None:
                out["train_state"]["scaler"] = scaler.state_dict()
        return out

    def save(with_state: bool, path: Path) -> None:
        ck = checkpoint(with_state)
        if dist.is_main:
            save_checkpoint(ck, path)

    logger = TrainLog(exp_dir, enabled=dist.is_main, tensorboard=tc.tensorboard)
    stop = False
    while state.epoch < tc.epochs and not stop:
        model.train()
        glob = sampler.batches(state.epoch)
        sampler.set_epoch(state.epoch, start=state.batch_in_epoch)
        batches = iter(train_loader)
        bar = tqdm(total=len(glob), initial=state.batch_in_epoch, desc=f"epoch {state.epoch + 1}",
                   leave=False, disable=None if dist.is_main else True, dynamic_ncols=True)
        meter = Meter(feat_cfg.frame_shift_ms / 1000)
        for start in range(state.batch_in_epoch, len(glob), group):
            step_batches = glob[start : start + group]
            mine = [next(batches).to(device, non_blocking=pin)
                    for _ in step_batches[dist.rank :: dist.world_size]]
            step_utts = sum(len(b) for b in step_batches)
            lr = lr_at(state.step + 1, cfg.scheduler, total_steps, state.valid_losses())
            for g in optimizer.param_groups:
                g["lr"] = lr
            res = train_step(net, optimizer, mine, step_utts, tc.max_norm, dist.world_size,
                             autocast, scaler, frozen_parameters(model, tc, state.step),
                             tc.inter_ctc_weight)
            if governor is not None:
                governor.step()
            state.batch_in_epoch = start + len(step_batches)
            bar.update(len(step_batches))
            if res.infeasible:
                state.infeasible_utts += len(res.infeasible)
                log.warning("%d utterance(s) too short for their labels under CTC (loss set to "
                            "0): %s", len(res.infeasible), ", ".join(res.infeasible))
            if res.ok:
                state.step += 1
                state.bad_in_row = 0
            else:
                state.skipped_steps += 1
                state.bad_in_row += 1
                ids = [u for b in mine for u in b.ids]
                log.warning("non-finite loss or gradient (loss %s, grad norm %s) at step %d, "
                            "step skipped (%d in a row); utterances: %s", res.loss, res.grad_norm,
                            state.step + 1, state.bad_in_row, ", ".join(ids))
                if state.bad_in_row >= tc.max_bad_steps:
                    save(True, exp_dir / "last.pt")
                    raise CtcasrError(
                        f"{state.bad_in_row} non-finite steps in a row (train.max_bad_steps); "
                        f"stopped at step {state.step}, epoch {state.epoch + 1}. The weights "
                        f"before them are in {exp_dir / 'last.pt'}. Lower scheduler.peak_lr or "
                        "train.max_norm, or check the utterances named in the log."
                    )
            meter.add(res.loss, sum(len(b) for b in mine),
                      sum(int(b.feat_lens.sum()) for b in mine),
                      sum(b.feats.shape[0] * b.feats.shape[1] for b in mine))
            if state.step % tc.log_every == 0 or state.batch_in_epoch == len(glob):
                rec = meter.flush()
                rec.update(step=state.step, epoch=state.epoch + 1, grad_norm=res.grad_norm, lr=lr,
                           threads=torch.get_num_threads())
                logger.write(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}")
            if tc.max_steps and state.step >= tc.max_steps:
                stop = True
                break
            if tc.save_every_steps and res.ok and state.step % tc.save_every_steps == 0:
                save(True, exp_dir / "last.pt")
        bar.close()
        if stop and state.batch_in_epoch < len(glob):
            log.info("stopping at step %d (train.max_steps)", state.step)
            save(True, exp_dir / "last.pt")
            break
        # ---- end of epoch: validate, keep the best, write checkpoints
        epoch = state.epoch + 1
        valid_loss, valid_score = validate(model, valid_loader, tokenizer, device, dist)
        state.epoch, state.batch_in_epoch = epoch, 0
        improved = (valid_score.wer, valid_loss) < (state.best_wer, state.best_loss)
        if improved:
            state.best_wer, state.best_loss, state.best_epoch = valid_score.wer, valid_loss, epoch
        rec = {"epoch": epoch, "step": state.step, "valid_loss": valid_loss,
               "valid_wer": valid_score.wer, "valid_cer": valid_score.cer}
        state.history.append(rec)
        logger.write(rec)
        log.info("epoch %d: valid loss %.4f, %s%s", epoch, valid_loss, valid_score.line(),
                 "  (best)" if improved else "")
        if tc.patience and epoch - state.best_epoch >= tc.patience and epoch < tc.epochs:
            log.info("early stop: no better validation WER for %d epochs (train.patience)",
                     tc.patience)
            stop = True
        save(False, exp_dir / f"epoch-{epoch}.pt")
        if dist.is_main:
            if improved:
                copy_checkpoint(exp_dir / f"epoch-{epoch}.pt", exp_dir / "best.pt")
            keep = {state.best_epoch}
            if tc.average:
                keep |= set(select_epochs(state.history, tc.average, tc.average_select))
            _prune_epochs(exp_dir, tc.keep_epochs, protect=keep)
        save(True, exp_dir / "last.pt")
    logger.close()
    if dist.is_main:
        _write_final_model(cfg, state, exp_dir, checkpoint(False), model, valid_loader,
                           tokenizer, device)
        if cache == "disk":  # written for this run's epochs; --resume writes it again if needed
            size = sum(s.nbytes() for s in stores.values() if s is not None)
            shutil.rmtree(exp_dir / "feats", ignore_errors=True)
            log.info("removed the feature store %s/feats (%.0f MB)", exp_dir, size / 2**20)
    if state.infeasible_utts:
        log.warning("%d utterance(s) had more labels than encoder frames (see the log above)",
                    state.infeasible_utts)
    if dist.is_main:
        bad.report(exp_dir / "skipped.txt")
    return state


def _write_final_model(cfg, state, exp_dir, current, model, valid_loader, tokenizer, device):
    """model.pt: the average of ``train.average`` epochs, or the best epoch, or the last."""
    tc = cfg.train
    if tc.average and state.history:
        epochs = select_epochs(state.history, tc.average, tc.average_select)
        avg = average_checkpoints([exp_dir / f"epoch-{e}.pt" for e in epochs])
        save_checkpoint(avg, exp_dir / "model.pt")
        model.load_state_dict(avg["model"])
        loss, s = validate(model, valid_loader, tokenizer, device, D.DistInfo())
        log.info("model.pt = average of epochs %s (%s): valid loss %.4f, %s",
                 ", ".join(map(str, epochs)), tc.average_select, loss, s.line())
    elif (exp_dir / "best.pt").exists():
        copy_checkpoint(exp_dir / "best.pt", exp_dir / "model.pt")
    else:
        save_checkpoint(current, exp_dir / "model.pt")
    log.info("done: %d steps; model %s (best epoch %d, valid WER %.2f %%)",
             state.step, exp_dir / "model.pt", state.best_epoch, state.best_wer)


def _amp(mode: str, device: torch.device):
    """(autocast context or None, GradScaler or None) for ``train.amp`` on ``device``."""
    if mode == "none":
        return None, None
    if device.type != "cuda":
        log.warning("train.amp=%s ignored: mixed precision is for CUDA, training in fp32 on %s",
                    mode, device)
        return None, None
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    autocast = torch.autocast(device_type="cuda", dtype=dtype)
    return autocast, torch.amp.GradScaler("cuda") if mode == "fp16" else None


@torch.no_grad()
def validate(
    model: CTCModel, loader, tokenizer: Tokenizer, device: torch.device,
    dist: D.DistInfo = D.DistInfo(),
):
    """Mean CTC loss per utterance and greedy WER over a loader (each process decodes its
    share of the batches; the results are gathered)."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    refs, hyps = [], []
    for batch in tqdm(loader, desc="valid", leave=False, disable=None if dist.is_main else True):
        batch = batch.to(device)
        out = model(batch.feats, batch.feat_lens, batch.tokens, batch.token_lens)
        total += out.loss.sum().item()
        n += len(batch)
        for i, nbest in enumerate(greedy_search(out.log_probs.cpu(), out.out_lens.cpu())):
            refs.append(tokenizer.decode(batch.tokens[i, : batch.token_lens[i]].tolist()))
            hyps.append(tokenizer.decode(nbest[0].tokens))
    model.train(was_training)
    parts = D.all_gather((total, n, refs, hyps), dist)
    total, n = sum(p[0] for p in parts), sum(p[1] for p in parts)
    refs, hyps = [r for p in parts for r in p[2]], [h for p in parts for h in p[3]]
    return total / max(n, 1), score(refs, hyps)[0]


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


def _prune_epochs(exp_dir: Path, keep: int, protect: set[int]) -> None:
    """Delete epoch-N.pt files but the newest ``keep`` and those in ``protect``."""
    epochs = sorted(int(p.stem.split("-")[1]) for p in exp_dir.glob("epoch-*.pt"))
    for e in epochs[:-keep] if keep > 0 else []:
        if e not in protect:
            (exp_dir / f"epoch-{e}.pt").unlink(missing_ok=True)
