"""Learning-rate schedules as pure functions of the step (1-based optimizer step).

``noam``: linear warmup then inverse-square-root decay, the schedule of "Attention Is All You
Need": ``lr = factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)``. The paper's
``factor * d_model**-0.5`` is only a scale; we expose the peak it produces instead
(``peak_lr``, reached at ``step == warmup``), because a peak learning rate is what people tune
and what transfers between model sizes. ``noam_factor`` converts between the two.
"""

from __future__ import annotations

from collections.abc import Callable

from ctcasr.config import SchedulerConfig
from ctcasr.errors import CtcasrError


def noam(step: int, warmup: int, peak_lr: float) -> float:
    step = max(step, 1)
    return peak_lr * min(step / warmup, (warmup / step) ** 0.5)


def noam_paper(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The formula exactly as written in the paper."""
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def noam_factor(peak_lr: float, d_model: int, warmup: int) -> float:
    """The paper's ``factor`` that gives ``peak_lr`` at ``step == warmup``."""
    return peak_lr * (d_model * warmup) ** 0.5


SCHEDULES: dict[str, Callable[[int, SchedulerConfig], float]] = {
    "noam": lambda step, c: noam(step, c.warmup_steps, c.peak_lr),
}


def lr_at(step: int, cfg: SchedulerConfig) -> float:
    """Learning rate for optimizer step ``step`` (1-based)."""
    if cfg.name not in SCHEDULES:
        raise CtcasrError(f"scheduler.name: unknown {cfg.name!r} (choose {', '.join(SCHEDULES)})")
    return SCHEDULES[cfg.name](step, cfg)
