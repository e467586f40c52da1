"""The training loop: one function, :func:`train`, driven by a :class:`Config`.

Files in the experiment folder::

    config.yaml        the resolved config
    train_log.jsonl    one JSON object per log interval / validation
    train.log          human-readable log
    last.pt            everything needed to resume (written each epoch and every
                       ``train.save_every_steps`` steps)
    epoch-N.pt         weights after epoch N (the newest ``train.keep_epochs`` are kept)
    best.pt            the epoch with the lowest validation WER (ties: lower loss)
    model.pt           the model to decode with (= best.pt), written at the end

Resuming is exact: the sampler's batches are a pure function of (seed, epoch), the checkpoint
stores how many batches of the current epoch were consumed, the optimizer state, the step and
the RNG states, so a resumed run produces bitwise the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ctcasr.checkpoint import load_checkpoint, save_checkpoint
from ctcasr.config import Config, save_config, to_dict
from ctcasr.data.dataset import ASRDataset, make_loader
from ctcasr.data.features import CMVNStats, frames_for_duration
from ctcasr.data.manifest import read_manifest
from ctcasr.data.sampler import BucketBatchSampler
from ctcasr.decode import greedy_search
from ctcasr.errors import CtcasrError
from ctcasr.models import CTCModel, build_model
from ctcasr.scoring import score
from ctcasr.tokenizer import Tokenizer, tokenizer_from_state, train_tokenizer
from ctcasr.train.loss import ctc_loss, min_ctc_frames
from ctcasr.train.schedule import lr_at

log = logging.getLogger("ctcasr")

# Config sections that must match a checkpoint for its weights to be reused.
ARCHITECTURE_KEYS = ("data.features", "tokenizer", "model")


@dataclass
class TrainState:
    """Runtime state, saved with every checkpoint (never mixed into the config)."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # batches of ``epoch`` already trained
    step: int = 0  # optimizer steps taken
    best_wer: float = math.inf
    best_loss: float = math.inf
    best_epoch: int = 0  # 1-based; 0 = none yet
    skipped_steps: int = 0  # non-finite loss / gradient
    infeasible_utts: int = 0  # labels longer than the encoder output allows
    history: list[dict[str, float]] = field(default_factory=list)


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CtcasrError(f"train.device is {name!r} but CUDA is not available")
    return torch.device(name)


def train(
    cfg: Config, train_manifest: Path, valid_manifest: Path, exp_dir: Path, resume: bool = False
) -> TrainState:
    """Train (or resume training) a model; returns the final training state."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(exp_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    try:
        return _train(cfg, train_manifest, valid_manifest, exp_dir, resume)
    finally:
        log.removeHandler(handler)
        handler.close()


def _train(
    cfg: Config, train_manifest: Path, valid_manifest: Path, exp_dir: Path, resume: bool
) -> TrainState:
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    device = select_device(cfg.train.device)
    ckpt = _resume_checkpoint(cfg, exp_dir, resume)

    train_utts = read_manifest(train_manifest)
    valid_utts = read_manifest(valid_manifest)
    if ckpt is not None:
        tokenizer = tokenizer_from_state(ckpt["tokenizer"])
    else:
        tokenizer = train_tokenizer(cfg.tokenizer, (u.text for u in train_utts))
    feat_cfg, dcfg = cfg.data.features, cfg.data
    train_ds = ASRDataset(train_utts, feat_cfg, tokenizer, dcfg.cache_features)
    valid_ds = ASRDataset(valid_utts, feat_cfg, tokenizer, dcfg.cache_features)
    sampler = BucketBatchSampler(
        [frames_for_duration(u.duration, feat_cfg) for u in train_utts],
        dcfg.max_frames_per_batch, dcfg.max_utts_per_batch,
        shuffle=True, seed=cfg.train.seed, sort_noise=dcfg.sort_noise,
        sortagrad_epochs=dcfg.sortagrad_epochs,
    )
    valid_sampler = BucketBatchSampler(
        [frames_for_duration(u.duration, feat_cfg) for u in valid_utts],
        dcfg.max_frames_per_batch, dcfg.max_utts_per_batch,
    )
    pin = device.type == "cuda"
    train_loader = make_loader(train_ds, sampler, dcfg.num_workers, pin)
    valid_loader = make_loader(valid_ds, valid_sampler, dcfg.num_workers, pin)

    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    if ckpt is not None:
        dim = ckpt["feature_dim"]
        mean, std = torch.zeros(dim), torch.ones(dim)  # overwritten by the state dict
    else:
        mean, std = compute_cmvn(train_ds, dcfg.num_workers)
    model = build_model(cfg.model, feat_cfg.num_mel_bins, tokenizer.vocab_size, mean, std)
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr_at(1, cfg.scheduler), betas=cfg.optim.betas,
        eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay,
    )
    state = TrainState()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ts = ckpt["train_state"]
        optimizer.load_state_dict(ts["optimizer"])
        state = TrainState(**ts["state"])
        _set_rng_state(ts["rng"])
        log.info("resumed from %s at epoch %d, batch %d, step %d", exp_dir / "last.pt",
                 state.epoch + 1, state.batch_in_epoch, state.step)
    else:
        save_config(cfg, exp_dir / "config.yaml")
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.2f M parameters, vocab %d, device %s", cfg.model.encoder,
             n_params / 1e6, tokenizer.vocab_size, device)

    def checkpoint(with_state: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "config": cfg.to_dict(), "model": model.state_dict(),
            "tokenizer": tokenizer.state_dict(), "feature_dim": feat_cfg.num_mel_bins,
            "vocab_size": tokenizer.vocab_size,
        }
        if with_state:
            out["train_state"] = {
                "optimizer": optimizer.state_dict(), "state": asdict(state), "rng": _rng_state(),
            }
        return out

    logger = _JsonLog(exp_dir / "train_log.jsonl")
    stop = False
    while state.epoch < cfg.train.epochs and not stop:
        model.train()
        n_batches = len(sampler.batches(state.epoch))
        sampler.set_epoch(state.epoch, start=state.batch_in_epoch)
        bar = tqdm(train_loader, total=n_batches, initial=state.batch_in_epoch,
                   desc=f"epoch {state.epoch + 1}", leave=False, disable=None, dynamic_ncols=True)
        meter = _Meter(feat_cfg.frame_shift_ms / 1000)
        for batch in bar:
            batch = batch.to(device, non_blocking=pin)
            loss_val, grad_norm = _train_step(model, optimizer, batch, cfg, state)
            state.batch_in_epoch += 1
            meter.add(loss_val, batch)
            if state.step % cfg.train.log_every == 0 or state.batch_in_epoch == n_batches:
                rec = meter.flush()
                rec.update(step=state.step, epoch=state.epoch + 1, grad_norm=grad_norm,
                           lr=optimizer.param_groups[0]["lr"])
                logger.write(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}")
            if cfg.train.max_steps and state.step >= cfg.train.max_steps:
                stop = True
                break
            if cfg.train.save_every_steps and state.step % cfg.train.save_every_steps == 0:
                save_checkpoint(checkpoint(True), exp_dir / "last.pt")
        bar.close()
        if stop and state.batch_in_epoch < n_batches:
            log.info("stopping at step %d (train.max_steps)", state.step)
            save_checkpoint(checkpoint(True), exp_dir / "last.pt")
            break
        # ---- end of epoch: validate, keep the best, write checkpoints
        epoch = state.epoch + 1
        valid_loss, valid_score = validate(model, valid_loader, tokenizer, device)
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
        save_checkpoint(checkpoint(False), exp_dir / f"epoch-{epoch}.pt")
        if improved:
            shutil.copyfile(exp_dir / f"epoch-{epoch}.pt", exp_dir / "best.pt.tmp")
            (exp_dir / "best.pt.tmp").replace(exp_dir / "best.pt")
        save_checkpoint(checkpoint(True), exp_dir / "last.pt")
        _prune_epochs(exp_dir, cfg.train.keep_epochs, protect={state.best_epoch})

    final = exp_dir / ("best.pt" if (exp_dir / "best.pt").exists() else "last.pt")
    if final.name == "last.pt":
        save_checkpoint(checkpoint(False), exp_dir / "model.pt")
    else:
        shutil.copyfile(final, exp_dir / "model.pt.tmp")
        (exp_dir / "model.pt.tmp").replace(exp_dir / "model.pt")
    if state.infeasible_utts:
        log.warning("%d utterance(s) had more labels than encoder frames (see the log above)",
                    state.infeasible_utts)
    log.info("done: %d steps; model %s (best epoch %d, valid WER %.2f %%)",
             state.step, exp_dir / "model.pt", state.best_epoch, state.best_wer)
    return state


def _train_step(
    model: CTCModel, optimizer: torch.optim.Optimizer, batch, cfg: Config, state: TrainState
) -> tuple[float, float]:
    """One optimizer step. Returns (loss per utterance, gradient norm before clipping)."""
    for g in optimizer.param_groups:
        g["lr"] = lr_at(state.step + 1, cfg.scheduler)
    log_probs, out_lens = model(batch.feats, batch.feat_lens)
    infeasible = out_lens < min_ctc_frames(batch.tokens, batch.token_lens)
    if infeasible.any():
        bad = [batch.ids[i] for i in infeasible.nonzero().squeeze(1).tolist()]
        state.infeasible_utts += len(bad)
        log.warning("%d utterance(s) too short for their labels under CTC (loss set to 0): %s",
                    len(bad), ", ".join(bad))
    loss = ctc_loss(log_probs, out_lens, batch.tokens, batch.token_lens).sum() / len(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_norm))
    if not (math.isfinite(grad_norm) and math.isfinite(loss.item())):
        state.skipped_steps += 1
        log.warning("non-finite loss or gradient at step %d, step skipped; utterances: %s",
                    state.step + 1, ", ".join(batch.ids))
        optimizer.zero_grad(set_to_none=True)
        return float("nan"), grad_norm
    optimizer.step()
    state.step += 1
    return loss.item(), grad_norm


@torch.no_grad()
def validate(model: CTCModel, loader, tokenizer: Tokenizer, device: torch.device):
    """Mean CTC loss per utterance and greedy WER over a loader."""
    model.eval()
    total, n = 0.0, 0
    refs, hyps = [], []
    for batch in tqdm(loader, desc="valid", leave=False, disable=None):
        batch = batch.to(device)
        log_probs, out_lens = model(batch.feats, batch.feat_lens)
        total += ctc_loss(log_probs, out_lens, batch.tokens, batch.token_lens).sum().item()
        n += len(batch)
        for i, nbest in enumerate(greedy_search(log_probs.cpu(), out_lens.cpu())):
            refs.append(tokenizer.decode(batch.tokens[i, : batch.token_lens[i]].tolist()))
            hyps.append(tokenizer.decode(nbest[0].tokens))
    model.train()
    return total / max(n, 1), score(refs, hyps)[0]


def compute_cmvn(dataset: ASRDataset, num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global mean / std per fbank bin over a whole dataset (one pass; fills its cache)."""
    stats = CMVNStats.empty(dataset.feat_cfg.num_mel_bins)
    if num_workers == 0:
        items = (dataset[i] for i in range(len(dataset)))
    else:
        items = torch.utils.data.DataLoader(
            dataset, batch_size=None, num_workers=num_workers, shuffle=False
        )
    for _, feats, _ in tqdm(items, total=len(dataset), desc="cmvn", leave=False, disable=None):
        stats.add(feats)
    return stats.mean_std()


def check_compatible(saved: dict[str, Any], cfg: Config, what: str) -> None:
    """Raise naming every architecture key where ``cfg`` differs from a checkpoint's config."""
    new = cfg.to_dict()
    diffs: list[str] = []
    for section in ARCHITECTURE_KEYS:
        a, b = _lookup(saved, section), _lookup(new, section)
        diffs += [f"{section}.{k}" if k else section for k in _diff_keys(a, b)]
    if diffs:
        raise CtcasrError(
            f"{what}: was trained with a different model config; mismatching keys: "
            + ", ".join(diffs)
        )


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
        raise CtcasrError(f"{last}: nothing to resume (no checkpoint in the experiment folder)")
    ckpt = load_checkpoint(last)
    if "train_state" not in ckpt:
        raise CtcasrError(f"{last}: has no training state to resume from")
    check_compatible(ckpt["config"], cfg, str(last))
    return ckpt


def _lookup(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part, {}) if isinstance(d, dict) else {}
    return d


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if to_dict(a) == to_dict(b) else [prefix]


def _rng_state() -> dict[str, Any]:
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(_as_tuple(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _prune_epochs(exp_dir: Path, keep: int, protect: set[int]) -> None:
    """Delete epoch-N.pt files but the newest ``keep`` and those in ``protect``."""
    epochs = sorted(int(p.stem.split("-")[1]) for p in exp_dir.glob("epoch-*.pt"))
    for e in epochs[:-keep] if keep > 0 else []:
        if e not in protect:
            (exp_dir / f"epoch-{e}.pt").unlink(missing_ok=True)


class _Meter:
    """Loss and throughput over one log interval."""

    def __init__(self, frame_shift_s: float) -> None:
        self.frame_shift_s = frame_shift_s
        self.reset()

    def reset(self) -> None:
        self.loss, self.utts, self.frames, self.t0 = 0.0, 0, 0, time.perf_counter()

    def add(self, loss: float, batch) -> None:
        if math.isfinite(loss):
            self.loss += loss * len(batch)
            self.utts += len(batch)
        self.frames += int(batch.feat_lens.sum())

    def flush(self) -> dict[str, float]:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rec = {"loss": self.loss / max(self.utts, 1), "utts_per_s": self.utts / dt,
               "audio_s_per_s": self.frames * self.frame_shift_s / dt}
        self.reset()
        return rec


class _JsonLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, rec: dict[str, Any]) -> None:
        rec = {"time": round(time.time(), 3), **rec}
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
