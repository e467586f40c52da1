"""How many intra-op threads training uses: every core, fewer while other processes keep some busy.

torch's threads meet at a barrier at the end of every parallel operation. When another process
takes one of the cores, the thread that shares it runs only part of the time and the others wait
for it at each barrier, and training slows to a fraction of its speed (measured in
docs/training.md, "Threads"). No fixed setting is best both
alone and under load, so :class:`ThreadGovernor` watches: every ``interval`` seconds it reads
how much CPU the rest of the machine used (``/proc/stat``'s busy time minus this process's and
its children's) and sets torch's intra-op threads to the cores left free, at least 1 and at most
the number it started with. It steps down as soon as others hold half a core or more, and back
up only when they leave it (a quarter core's slack), so a short blip does not make it flap.

The thread count changes the last digits (convolutions and matrix products sum in another
order), so a governed run is
reproducible to rounding, not bitwise; ``train.num_threads: N`` fixes N threads and turns the
governor off, for bitwise-reproducible runs. It is off where ``/proc`` is not (macOS, Windows):
torch's default there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DOWN_AT = 0.5  # others using more than this share of a core take a thread away ...
UP_BELOW = 0.3  # ... which comes back when they leave all but this much (hysteresis)
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_s() -> float:
    """CPU seconds all processes have used since boot, over all cores (``/proc/stat``'s first
    line: user nice system idle iowait irq softirq steal; steal counts as taken)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / TICK


def own_busy_s(pid: int | None = None) -> float:
    """CPU seconds used by process ``pid`` (this one by default) and its live children (a
    DataLoader's workers), from ``/proc/PID/stat``."""
    pid = pid or os.getpid()
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone since the listing
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: ppid
            total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return total


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class ThreadGovernor:
    """``step()`` between training steps; it changes ``torch.set_num_threads`` at most once per
    ``interval`` seconds. ``max_threads``: torch's count when it is made (all cores)."""

    def __init__(self, interval: float = 3.0, max_threads: int = 0,
                 sample: Callable[[], tuple[float, float, float]] | None = None,
                 ncores: int = 0, logger: logging.Logger = log) -> None:
        self.interval = interval
        self.log = logger
        self.max_threads = max_threads or torch.get_num_threads()
        self.threads = self.max_threads
        self.cores = ncores or cores()
        self.sample = sample or (lambda: (time.monotonic(), machine_busy_s(), own_busy_s()))
        self.others = 0.0  # cores others used over the last interval
        try:
            self.last = self.sample()
        except OSError:  # no /proc here: torch's default, untouched
            self.last = None

    @property
    def enabled(self) -> bool:
        return self.last is not None and self.max_threads > 1

    def step(self) -> int:
        """The thread count now (changed when the last interval calls for it)."""
        if not self.enabled:
            return self.threads
        now = self.sample()
        wall = now[0] - self.last[0]
        if wall < self.interval:
            return self.threads
        self.others = max(0.0, ((now[1] - self.last[1]) - (now[2] - self.last[2])) / wall)
        self.last = now
        free = self.cores - self.others
        down, up = int(free + DOWN_AT), int(free + UP_BELOW)  # cores 2: others > 0.5 / < 0.3
        want = self.threads
        if down < self.threads:
            want = down
        elif up > self.threads:
            want = up
        want = max(1, min(self.max_threads, want))
        if want != self.threads:
            self.log.info("threads: %d -> %d (other processes used %.1f of %d cores over the last "
                     "%.0f s)", self.threads, want, self.others, self.cores, wall)
            torch.set_num_threads(want)
            self.threads = want
        return self.threads
