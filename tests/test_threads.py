"""The training thread governor (ctcasr.train.threads): fewer threads while other processes take
cores, all of them back when they leave; torch's count restored after training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ctcasr.train.threads import ThreadGovernor, cores, machine_busy_s, own_busy_s

HAS_PROC = Path("/proc/stat").exists()


class Clock:
    """A fake (wall, machine busy, own busy) sampler: ``run(seconds, others, own)``."""

    def __init__(self) -> None:
        self.t = self.machine = self.own = 0.0

    def run(self, seconds: float, others: float, own: float) -> None:
        self.t += seconds
        self.machine += seconds * (others + own)
        self.own += seconds * own

    def __call__(self) -> tuple[float, float, float]:
        return self.t, self.machine, self.own


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_steps_down_under_load_and_back_up_with_hysteresis(keep_threads):
    torch.set_num_threads(4)
    clock = Clock()
    g = ThreadGovernor(interval=3.0, sample=clock, ncores=4)
    steps = [  # (seconds, cores others used, threads expected after)
        (1.0, 3.0, 4),  # not an interval yet: no change
        (2.5, 0.0, 3),  # over these 3.5 s others used 0.86 of a core: one thread fewer
        (3.0, 0.0, 4),  # alone again
        (3.0, 1.6, 2),  # 2.4 cores free
        (3.0, 0.5, 3),  # 3.5 cores free: one thread back (int(3.5 + 0.3))
        (3.0, 0.4, 3),  # the fourth only when others use less than 0.3 of a core
        (3.0, 0.2, 4),
        (3.0, 9.0, 1),  # never below one thread
    ]
    for seconds, others, want in steps:
        clock.run(seconds, others, own=g.threads)
        assert g.step() == want, (seconds, others)
        assert torch.get_num_threads() == want
    assert g.others == pytest.approx(9.0)


def test_off_without_proc_or_with_one_thread(keep_threads):
    def broken():
        raise OSError("no /proc here")

    torch.set_num_threads(2)
    assert not ThreadGovernor(sample=broken).enabled
    clock = Clock()
    g = ThreadGovernor(interval=1.0, max_threads=1, sample=clock, ncores=2)
    clock.run(5.0, 2.0, 1.0)
    assert not g.enabled and g.step() == 1


@pytest.mark.alone
@pytest.mark.skipif(not HAS_PROC, reason="the governor reads /proc (Linux)")
def test_own_cpu_counts_children_and_machine_counts_all():
    """A busy child is ours, not 'others': a DataLoader worker must not look like load."""
    before_own, before_all = own_busy_s(), machine_busy_s()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\n"
                              "while time.time() - t < 1.5: pass"])
    time.sleep(1.0)
    own, machine = own_busy_s() - before_own, machine_busy_s() - before_all
    child.wait()
    assert own > 0.5  # the child's second of CPU, while it lives
    assert machine >= own - 0.1


def busy_process() -> int:
    """A busy loop that is not our child (the governor counts its children as its own): started
    by a shell that exits at once, so it belongs to init. Returns its pid."""
    out = subprocess.run(["sh", "-c", f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 "
                          "& echo $!"], capture_output=True, text=True, check=True).stdout
    return int(out)


@pytest.mark.alone
@pytest.mark.skipif(not HAS_PROC or cores() < 2, reason="needs /proc and 2 cores")
def test_a_real_busy_process_takes_a_thread_and_gives_it_back(keep_threads):
    torch.set_num_threads(cores())
    g = ThreadGovernor(interval=1.0)
    pid = busy_process()
    try:
        time.sleep(1.5)
        assert g.step() == cores() - 1, f"others used {g.others:.2f} cores"
    finally:
        os.kill(pid, signal.SIGKILL)
    time.sleep(1.5)
    assert g.step() == cores(), f"others used {g.others:.2f} cores"
