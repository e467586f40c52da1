"""Learning-rate schedules as pure functions of the optimizer step (1-based).

Every schedule warms up linearly to ``peak_lr`` over ``warmup_steps`` and then:

- ``noam``: inverse-square-root decay, the schedule of "Attention Is All You Need":
  ``lr = factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)``. The paper's
  ``factor * d_model**-0.5`` is only a scale; we expose the peak it produces instead
  (``peak_lr``, reached at ``step == warmup``), because a peak learning rate is what people tune
  and what transfers between model sizes. ``noam_factor`` converts between the two.
- ``cosine``: half a cosine from ``peak_lr`` down to ``min_lr`` at ``total_steps``, then flat.
- ``step``: ``peak_lr * gamma**k`` where k counts the ``milestones`` passed (or whole
  ``step_size`` periods when there are no milestones).
- ``plateau``: ``peak_lr`` times :func:`plateau_scale` of the validation losses so far (reduce on
  plateau); the scale is recomputed from the training history, so it needs no saved state.
- ``constant``: ``peak_lr``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

from ctcasr.config import SchedulerConfig
from ctcasr.errors import CtcasrError


def warmup(step: int, warmup_steps: int) -> float:
    """Linear warmup factor in (0, 1]."""
    return min(1.0, max(step, 1) / warmup_steps) if warmup_steps > 0 else 1.0


def noam(step: int, warmup: int, peak_lr: float) -> float:
    step = max(step, 1)
    if warmup <= 0:
        return peak_lr * step**-0.5
    return peak_lr * min(step / warmup, (warmup / step) ** 0.5)


def noam_paper(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The formula exactly as written in the paper."""
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def noam_factor(peak_lr: float, d_model: int, warmup: int) -> float:
    """The paper's ``factor`` that gives ``peak_lr`` at ``step == warmup``."""
    return peak_lr * (d_model * warmup) ** 0.5


def cosine(step: int, warmup_steps: int, peak_lr: float, min_lr: float, total: int) -> float:
    if step <= warmup_steps:
        return peak_lr * warmup(step, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(total - warmup_steps, 1))
    return min_lr + 0.5 * (peak_lr - min_lr) * (1 + math.cos(math.pi * progress))


def multistep(step: int, c: SchedulerConfig) -> float:
    if c.milestones:
        k = bisect.bisect_right(sorted(c.milestones), step)
    else:
        k = step // c.step_size if c.step_size > 0 else 0
    return c.peak_lr * warmup(step, c.warmup_steps) * c.gamma**k


def plateau_scale(valid_losses: Sequence[float], c: SchedulerConfig) -> float:
    """``factor ** n``, n = how many times the loss went more than ``patience`` epochs without
    improving by ``threshold`` (relative) on the best so far (as torch's ReduceLROnPlateau)."""
    best, bad, scale = math.inf, 0, 1.0
    for loss in valid_losses:
        if loss < best * (1 - c.threshold):
            best, bad = loss, 0
        else:
            bad += 1
            if bad > c.patience:
                scale, bad = scale * c.factor, 0
    return scale


SCHEDULES: dict[str, Callable[[int, SchedulerConfig, int], float]] = {
    "noam": lambda step, c, total: noam(step, c.warmup_steps, c.peak_lr),
    "cosine": lambda step, c, total: cosine(step, c.warmup_steps, c.peak_lr, c.min_lr,
                                            c.total_steps or total),
    "step": lambda step, c, total: multistep(step, c),
    "plateau": lambda step, c, total: c.peak_lr * warmup(step, c.warmup_steps),
    "constant": lambda step, c, total: c.peak_lr * warmup(step, c.warmup_steps),
}


def check_schedule(cfg: SchedulerConfig, total_steps: int) -> None:
    if cfg.name not in SCHEDULES:
        raise CtcasrError(f"scheduler.name: unknown {cfg.name!r} (choose {', '.join(SCHEDULES)})")
    if cfg.name == "cosine" and (cfg.total_steps or total_steps) <= 0:
        raise CtcasrError("scheduler.total_steps: cosine needs the number of steps")


def lr_at(
    step: int, cfg: SchedulerConfig, total_steps: int = 0, valid_losses: Sequence[float] = ()
) -> float:
    """Learning rate for optimizer step ``step`` (1-based). ``total_steps`` is the run's length
    (used by cosine when ``scheduler.total_steps`` is 0); ``valid_losses`` feed ``plateau``."""
    check_schedule(cfg, total_steps)
    lr = SCHEDULES[cfg.name](step, cfg, total_steps)
    if cfg.name == "plateau":
        lr *= plateau_scale(valid_losses, cfg)
    return lr
