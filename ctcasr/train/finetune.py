"""Fine-tuning: start a run from another model's weights (``ctcasr train --init CHECKPOINT``).

As ESPnet's ``--init_param`` and NeMo's ``init_from_pretrained_model``: every parameter whose
name and shape match is copied; the CTC output layer is copied only when the two vocabularies
are the same token list (else it keeps its fresh initialisation); the CMVN statistics are this
run's (computed on its training data), never the source's. What was loaded, re-initialised and
left out is logged. A source whose encoder has nothing in common with this model is an error.

Freezing (``train.freeze_frontend``, ``train.freeze_encoder_layers: N``) holds those weights
for the first ``train.freeze_steps`` optimizer steps: their gradients are dropped before
clipping and the optimizer step, so AdamW neither moves nor decays them, and their optimizer
state starts when they are released. It depends only on the step, so ``--resume`` is exact.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ctcasr.checkpoint import load_checkpoint
from ctcasr.config import FbankConfig, TrainConfig
from ctcasr.errors import CtcasrError

log = logging.getLogger("ctcasr")
HEAD = ("head.weight", "head.bias")
_BLOCK = re.compile(r"^encoder\.(?:\w+_)?layers\.(\d+)\.")


@dataclass
class InitReport:
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # head (other vocabulary)
    left_out: list[str] = field(default_factory=list)  # "name (why)"

    def lines(self) -> list[str]:
        return [f"loaded {len(self.loaded)} tensor(s): {_groups(self.loaded)}",
                f"re-initialised: {', '.join(self.reinitialised) or 'nothing'}",
                f"left out: {', '.join(self.left_out) or 'nothing'}"]


def _groups(names: list[str]) -> str:
    """``frontend (4), encoder.layers.0 (12), ...``: counts by module, in order."""
    counts: dict[str, int] = {}
    for n in names:
        m = _BLOCK.match(n)
        key = m.group(0)[:-1] if m else n.split(".")[0]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} ({v})" for k, v in counts.items())


def init_from(model: torch.nn.Module, src: dict, same_vocabulary: bool,
              path: Path) -> InitReport:
    """Copy ``src``'s matching weights into ``model`` (see the module doc)."""
    have = model.state_dict()
    report = InitReport()
    new = {}
    for name, value in src["model"].items():
        if name.startswith("cmvn."):
            report.left_out.append(f"{name} (CMVN: from this run's training data)")
        elif name in HEAD and not same_vocabulary:
            continue  # reported below
        elif name not in have:
            report.left_out.append(f"{name} (not in this model)")
        elif have[name].shape != value.shape:
            report.left_out.append(f"{name} (shape {tuple(value.shape)}, this model "
                                   f"{tuple(have[name].shape)})")
        else:
            new[name] = value
    if not same_vocabulary:
        report.reinitialised = [n for n in HEAD if n in have]
    if not any(n.startswith("encoder.") for n in new):
        src_enc = src.get("config", {}).get("model", {}).get("encoder", "?")
        raise CtcasrError(f"{path}: nothing matches: none of its encoder weights fit this model "
                          f"(its encoder: {src_enc}; see the config's model section)")
    model.load_state_dict(new, strict=False)
    report.loaded = list(new)
    return report


def load_init(path: Path) -> dict:
    src = load_checkpoint(path)
    if "tokenizer" not in src or "config" not in src:
        raise CtcasrError(f"{path}: not a model checkpoint (no tokenizer / config)")
    return src


def log_init(report: InitReport, path: Path, src_features: dict, features: FbankConfig) -> None:
    log.info("init from %s:", path)
    for line in report.lines():
        log.info("  %s", line)
    log.info("  CMVN statistics: computed on this run's training data")
    mine = asdict(features)
    differ = [f"{k} {v} (this run: {mine[k]})" for k, v in src_features.items()
              if k in mine and v != mine[k]]
    if differ:  # the weights expect the source's features: say so before epochs are spent
        log.warning("  %s was trained on other features: %s", path, ", ".join(differ))


def freezing_summary(model: torch.nn.Module, tc: TrainConfig, total_steps: int) -> str:
    """The log line saying what ``train.freeze_*`` holds still ("" when nothing); an error for a
    layer count the encoder does not have, rather than freezing less than asked without a word."""
    if tc.freeze_steps <= 0 or not (tc.freeze_frontend or tc.freeze_encoder_layers):
        return ""
    blocks = {int(m.group(1)) for n, _ in model.named_parameters()
              if (m := _BLOCK.match(n.removeprefix("module.")))}
    if tc.freeze_encoder_layers > len(blocks):
        raise CtcasrError(f"train.freeze_encoder_layers: {tc.freeze_encoder_layers}, but this "
                          f"model's encoder has {len(blocks)} layer(s)")
    held = {id(p) for p in frozen_parameters(model, tc, 0)}
    names = [n.removeprefix("module.") for n, p in model.named_parameters() if id(p) in held]
    when = ("for the whole run" if tc.freeze_steps >= total_steps else
            f"for the first {tc.freeze_steps} of {total_steps} optimizer steps")
    return f"held still {when}: {len(names)} tensor(s): {_groups(names)}"


def frozen_parameters(model: torch.nn.Module, tc: TrainConfig,
                      step: int) -> list[torch.nn.Parameter]:
    """The parameters held still at optimizer step ``step`` (0-based)."""
    if step >= tc.freeze_steps:
        return []
    out = []
    for name, p in model.named_parameters():
        name = name.removeprefix("module.")  # DDP
        m = _BLOCK.match(name)
        if (tc.freeze_frontend and name.startswith("frontend.")) or \
                (m and int(m.group(1)) < tc.freeze_encoder_layers):
            out.append(p)
    return out
