"""What ctcasr runs on: installed versions, and one clear line when torch / torchaudio do not load.

torchaudio's compiled extension loads only with the torch release it was built against
(torchaudio 2.11.1 needs torch >= 2.13; 2.11.0 needs 2.11.0). A mismatch shows up deep in an
import as ``undefined symbol`` or ``Could not load this library``; :func:`check_torch` turns it
into one line naming both versions and the command that repairs the environment.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from ctcasr.errors import CtcasrError, first_line

REPAIR = "make -B .venv/.installed (from a checkout), or pip install -r requirements.txt"


def installed(package: str) -> str:
    """The installed version of ``package`` (from its metadata: nothing is imported)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name (numbers move with it: docs/results.md says which CPU)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    from ctcasr import __version__

    return {"ctcasr": __version__, "torch": installed("torch"),
            "torchaudio": installed("torchaudio"), "python": platform.python_version()}


def check_torch() -> None:
    """Import torch and torchaudio (with its compiled extension); raise :class:`CtcasrError`
    with one line (versions, cause, repair) if either fails."""
    try:
        import torch  # noqa: F401
        import torchaudio  # noqa: F401  (loads libtorchaudio: the part that breaks)
    except (ImportError, OSError, RuntimeError) as e:
        raise CtcasrError(
            f"torch {installed('torch')} and torchaudio {installed('torchaudio')} do not load "
            f"together ({type(e).__name__}: {first_line(e)}); repair with: {REPAIR}") from None


def native_16bit(cpuinfo: str | None = None) -> dict[str, bool]:
    """Which 16-bit float types this CPU computes in natively, from its flags (``cpuinfo``:
    the text of /proc/cpuinfo, read when not given; nothing is native where it cannot be read):
    ``bf16`` with AVX512-BF16 or AMX-BF16, ``fp16`` with AMX-FP16. Elsewhere torch emulates
    them, slower than fp32: a Xeon with AVX512-FP16 but no AMX-FP16 took over 100x fp32's time
    for a Conformer in fp16 (docs/inference.md), so AVX512-FP16 alone does not count."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {"bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
            "fp16": "amx_fp16" in flags}


ONEDNN_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def widen_onednn_cache(capacity: int = 16384) -> None:
    """Let oneDNN keep the kernels it builds for ``capacity`` primitives instead of its default
    1,024, unless the environment already says how many. Its bf16 kernels on the CPU are built
    per tensor shape, dozens per training step; training walks through its batch shapes in
    turn, so past ~25 shapes (with 1,024) every step rebuilds its kernels, and a bf16 Conformer
    step on 40 shapes ran 1.5x slower than with room for them (docs/training.md). oneDNN reads
    the setting when it first builds a primitive in the process: call this before any model
    runs (later it changes nothing). The cached kernels take little memory (40 shapes: none
    measurable)."""
    os.environ.setdefault(ONEDNN_CACHE, str(capacity))
