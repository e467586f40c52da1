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
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ctcasr.checkpoint import copy_checkpoint, model_checkpoint, save_checkpoint
from ctcasr.config import Config
from ctcasr.data.dataset import Batch
from ctcasr.decode import greedy_search
from ctcasr.environment import widen_onednn_cache
from ctcasr.errors import CtcasrError
from ctcasr.models import CTCModel
from ctcasr.scoring import score
from ctcasr.tokenizer import Tokenizer
from ctcasr.train import distributed as D
from ctcasr.train.average import average_checkpoints, select_epochs
from ctcasr.train.finetune import frozen_parameters, load_init
from ctcasr.train.monitor import Meter, TrainLog
from ctcasr.train.schedule import lr_at
from ctcasr.train.setup import (
    Data,
    Trainee,
    build_data,
    build_model_and_optimizer,
    open_experiment,
)
from ctcasr.train.state import TrainState, rng_state
from ctcasr.train.threads import ThreadGovernor

log = logging.getLogger("ctcasr")


def train(
    cfg: Config, train_manifest: Path, valid_manifest: Path, exp_dir: Path, resume: bool = False,
    skip_bad: bool = False,
) -> TrainState:
    """Train (or resume training) a model; returns the final training state.

    Under ``torchrun`` every process calls this; they train one model together (DDP)."""
    widen_onednn_cache()  # before any oneDNN kernel is built in this process
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
    cr_weight: float = 0.0,
) -> StepResult:
    """One optimizer step over this process's ``batches`` (gradient accumulation).

    ``step_utts`` is the number of utterances in the step over all processes; each process
    scales its loss by ``world_size / step_utts`` because DDP averages gradients over processes.
    ``frozen`` parameters lose their gradients before clipping: the step leaves them as they are.
    The loss is the model's (:class:`ctcasr.models.ctc.CTCOutput`; intermediate CTC layers
    weighted by ``inter_weight``, CR-CTC's consistency term by ``cr_weight`` when the batches
    hold two copies of each utterance).
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
                            inter_weight, cr_weight)
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


@dataclass
class Run:
    """A training run between its steps: what :mod:`ctcasr.train.setup` built, and the loop's
    own helpers."""

    cfg: Config
    exp_dir: Path
    dist: D.DistInfo
    device: torch.device
    data: Data
    trainee: Trainee
    governor: ThreadGovernor | None
    logger: TrainLog

    @property
    def state(self) -> TrainState:
        return self.trainee.state

    def checkpoint(self, with_state: bool) -> dict[str, Any]:
        """Collective under DDP (gathers RNG states): call on every process."""
        t = self.trainee
        out = model_checkpoint(self.cfg, t.model, self.data.tokenizer)
        if with_state:
            out["train_state"] = {"optimizer": t.optimizer.state_dict(),
                                  "state": asdict(t.state),
                                  "rng": D.all_gather(rng_state(), self.dist)}
            if t.scaler is not None:
                out["train_state"]["scaler"] = t.scaler.state_dict()
        return out

    def save(self, with_state: bool, path: Path) -> None:
        ck = self.checkpoint(with_state)
        if self.dist.is_main:
            save_checkpoint(ck, path)


def _train(
    cfg: Config, train_manifest: Path, valid_manifest: Path, exp_dir: Path, resume: bool,
    skip_bad: bool, dist: D.DistInfo, device: torch.device,
) -> TrainState:
    tc = cfg.train
    if tc.num_threads > 0:
        torch.set_num_threads(tc.num_threads)
    governor = ThreadGovernor(logger=log) if tc.num_threads == 0 and device.type == "cpu" \
        else None
    ckpt = open_experiment(cfg, exp_dir, resume, dist)
    init = load_init(Path(tc.init)) if tc.init and ckpt is None else None  # fails early
    data = build_data(cfg, train_manifest, valid_manifest, exp_dir, ckpt, init, skip_bad, dist,
                      device)
    trainee = build_model_and_optimizer(cfg, data, ckpt, init, exp_dir, dist, device)
    run = Run(cfg, exp_dir, dist, device, data, trainee, governor,
              TrainLog(exp_dir, enabled=dist.is_main, tensorboard=tc.tensorboard))
    stop = False
    while run.state.epoch < tc.epochs and not stop:
        stop = train_one_epoch(run)
        if stop and run.state.batch_in_epoch < len(data.sampler.batches(run.state.epoch)):
            log.info("stopping at step %d (train.max_steps)", run.state.step)
            run.save(True, exp_dir / "last.pt")
            break
        stop = end_of_epoch(run) or stop
    run.logger.close()
    finish(run)
    return run.state


def train_one_epoch(run: Run) -> bool:
    """Train the rest of the current epoch (from ``state.batch_in_epoch``); True when
    ``train.max_steps`` was reached."""
    cfg, state, t, dist = run.cfg, run.state, run.trainee, run.dist
    tc, data = cfg.train, run.data
    t.model.train()
    glob = data.sampler.batches(state.epoch)
    data.sampler.set_epoch(state.epoch, start=state.batch_in_epoch)
    batches = iter(data.train_loader)
    pin = run.device.type == "cuda"
    bar = tqdm(total=len(glob), initial=state.batch_in_epoch, desc=f"epoch {state.epoch + 1}",
               leave=False, disable=None if dist.is_main else True, dynamic_ncols=True)
    meter = Meter(cfg.data.features.frame_shift_ms / 1000)
    for start in range(state.batch_in_epoch, len(glob), data.group):
        step_batches = glob[start : start + data.group]
        mine = [next(batches).to(run.device, non_blocking=pin)
                for _ in step_batches[dist.rank :: dist.world_size]]
        lr = lr_at(state.step + 1, cfg.scheduler, data.total_steps, state.valid_losses())
        for g in t.optimizer.param_groups:
            g["lr"] = lr
        res = train_step(t.net, t.optimizer, mine, sum(len(b) for b in step_batches),
                         tc.max_norm, dist.world_size, t.autocast, t.scaler,
                         frozen_parameters(t.model, tc, state.step), tc.inter_ctc_weight,
                         tc.cr_ctc_weight)
        if run.governor is not None:
            run.governor.step()
        state.batch_in_epoch = start + len(step_batches)
        bar.update(len(step_batches))
        _account(run, res, mine)
        meter.add(res.loss, sum(len(b) for b in mine),  # the audio once, not each CR-CTC copy
                  sum(int(b.feat_lens[: len(b)].sum()) for b in mine),
                  sum(len(b) * b.feats.shape[1] for b in mine))
        if state.step % tc.log_every == 0 or state.batch_in_epoch == len(glob):
            rec = meter.flush()
            rec.update(step=state.step, epoch=state.epoch + 1, grad_norm=res.grad_norm, lr=lr,
                       threads=torch.get_num_threads())
            run.logger.write(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}")
        if tc.max_steps and state.step >= tc.max_steps:
            bar.close()
            return True
        if tc.save_every_steps and res.ok and state.step % tc.save_every_steps == 0:
            run.save(True, run.exp_dir / "last.pt")
    bar.close()
    return False


def _account(run: Run, res: StepResult, batches: list[Batch]) -> None:
    """Count the step (or the skipped one) in the state; stop the run after
    ``train.max_bad_steps`` non-finite steps in a row."""
    state, tc = run.state, run.cfg.train
    if res.infeasible:
        state.infeasible_utts += len(res.infeasible)
        log.warning("%d utterance(s) too short for their labels under CTC (loss set to 0): %s",
                    len(res.infeasible), ", ".join(res.infeasible))
    if res.ok:
        state.step += 1
        state.bad_in_row = 0
        return
    state.skipped_steps += 1
    state.bad_in_row += 1
    ids = [u for b in batches for u in b.ids]
    log.warning("non-finite loss or gradient (loss %s, grad norm %s) at step %d, step skipped "
                "(%d in a row); utterances: %s", res.loss, res.grad_norm, state.step + 1,
                state.bad_in_row, ", ".join(ids))
    if state.bad_in_row >= tc.max_bad_steps:
        run.save(True, run.exp_dir / "last.pt")
        raise CtcasrError(
            f"{state.bad_in_row} non-finite steps in a row (train.max_bad_steps); stopped at "
            f"step {state.step}, epoch {state.epoch + 1}. The weights before them are in "
            f"{run.exp_dir / 'last.pt'}. Lower scheduler.peak_lr or train.max_norm, or check "
            "the utterances named in the log."
        )


def end_of_epoch(run: Run) -> bool:
    """Validate, keep the best, write the epoch's checkpoints; True when ``train.patience``
    says to stop."""
    state, tc, exp_dir = run.state, run.cfg.train, run.exp_dir
    epoch = state.epoch + 1
    valid_loss, valid_score = validate(run.trainee.model, run.data.valid_loader,
                                       run.data.tokenizer, run.device, run.dist)
    state.epoch, state.batch_in_epoch = epoch, 0
    improved = (valid_score.wer, valid_loss) < (state.best_wer, state.best_loss)
    if improved:
        state.best_wer, state.best_loss, state.best_epoch = valid_score.wer, valid_loss, epoch
    rec = {"epoch": epoch, "step": state.step, "valid_loss": valid_loss,
           "valid_wer": valid_score.wer, "valid_cer": valid_score.cer}
    state.history.append(rec)
    run.logger.write(rec)
    log.info("epoch %d: valid loss %.4f, %s%s", epoch, valid_loss, valid_score.line(),
             "  (best)" if improved else "")
    stop = bool(tc.patience and epoch - state.best_epoch >= tc.patience and epoch < tc.epochs)
    if stop:
        log.info("early stop: no better validation WER for %d epochs (train.patience)",
                 tc.patience)
    run.save(False, exp_dir / f"epoch-{epoch}.pt")
    if run.dist.is_main:
        if improved:
            copy_checkpoint(exp_dir / f"epoch-{epoch}.pt", exp_dir / "best.pt")
        keep = {state.best_epoch}
        if tc.average:
            keep |= set(select_epochs(state.history, tc.average, tc.average_select))
        _prune_epochs(exp_dir, tc.keep_epochs, protect=keep)
    run.save(True, exp_dir / "last.pt")
    return stop


def finish(run: Run) -> None:
    """model.pt, the feature store removed, what was left out reported."""
    data, state = run.data, run.state
    if run.dist.is_main:
        _write_final_model(run.cfg, state, run.exp_dir, run.checkpoint(False),
                           run.trainee.model, data.valid_loader, data.tokenizer, run.device)
        if any(s is not None for s in data.stores.values()):  # written for this run's epochs
            size = sum(s.nbytes() for s in data.stores.values() if s is not None)
            shutil.rmtree(run.exp_dir / "feats", ignore_errors=True)
            log.info("removed the feature store %s/feats (%.0f MB)", run.exp_dir, size / 2**20)
    if state.infeasible_utts:
        log.warning("%d utterance(s) had more labels than encoder frames (see the log above)",
                    state.infeasible_utts)
    if run.dist.is_main:
        data.bad.report(run.exp_dir / "skipped.txt")


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


def _prune_epochs(exp_dir: Path, keep: int, protect: set[int]) -> None:
    """Delete epoch-N.pt files but the newest ``keep`` and those in ``protect``."""
    epochs = sorted(int(p.stem.split("-")[1]) for p in exp_dir.glob("epoch-*.pt"))
    for e in epochs[:-keep] if keep > 0 else []:
        if e not in protect:
            (exp_dir / f"epoch-{e}.pt").unlink(missing_ok=True)
