"""Reading audio with ``soundfile``: mono, float32, at the configured sample rate.

Multi-channel audio is averaged to mono; other sample rates are resampled with
``torchaudio.functional.resample``. Missing, unreadable, empty, truncated (shorter than the
manifest's ``duration`` by more than ``TRUNCATED_S``) and non-finite audio raise
:class:`CtcasrError` naming the file (and the manifest line when given).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from ctcasr.errors import CtcasrError, first_line

TRUNCATED_S = 0.1  # audio this much shorter than its manifest duration is an error


def load_audio(
    path: str | Path, sample_rate: int, where: str = "", offset: float | None = None,
    duration: float = 0.0,
) -> torch.Tensor:
    """Return a 1-D float32 waveform in [-1, 1] at ``sample_rate``.

    With ``offset`` (seconds, not None) only ``[offset, offset + duration)`` is read. A positive
    ``duration`` is also what the audio must (nearly) hold.
    """
    path, ctx = _check_exists(path, where)
    try:
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            frames = -1
            if offset is not None:
                f.seek(min(round(offset * sr), f.frames))
                frames = round(duration * sr)
            data = f.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        raise CtcasrError(f"{path}: cannot decode audio: {first_line(e)}{ctx}") from None
    if data.shape[0] == 0:
        raise CtcasrError(f"{path}: audio has zero samples{ctx}")
    if data.shape[0] / sr < duration - TRUNCATED_S:
        raise CtcasrError(f"{path}: audio holds {data.shape[0] / sr:.2f} s, the manifest says "
                          f"{duration:.2f} s (truncated file?){ctx}")
    if not np.isfinite(data).all():
        raise CtcasrError(f"{path}: audio contains NaN or infinite samples{ctx}")
    return to_mono(data, sr, sample_rate)


def to_mono(data: np.ndarray, sr: int, sample_rate: int) -> torch.Tensor:
    """``[samples]`` or ``[samples, channels]`` float audio at ``sr`` -> 1-D float32 at
    ``sample_rate`` (channels averaged, then resampled)."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    wave = torch.from_numpy(np.ascontiguousarray(data))
    if sr != sample_rate:
        wave = AF.resample(wave, sr, sample_rate)
    return wave.contiguous()


def audio_duration(path: str | Path, where: str = "") -> float:
    """Duration in seconds from the file header (no decoding)."""
    path, ctx = _check_exists(path, where)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        raise CtcasrError(f"{path}: cannot read audio header: {first_line(e)}{ctx}") from None
    return info.frames / info.samplerate


def _check_exists(path: str | Path, where: str) -> tuple[Path, str]:
    """``(path, " (manifest WHERE)")``; raises when there is no such file."""
    path, ctx = Path(path), f" (manifest {where})" if where else ""
    if not path.is_file():
        raise CtcasrError(f"{path}: audio file not found{ctx}")
    return path, ctx
