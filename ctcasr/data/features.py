"""Log-mel filterbank features and global CMVN statistics.

Features are Kaldi-compatible fbank from ``torchaudio.compliance.kaldi``. CMVN statistics are
computed here, once, over the training set; they are *applied* in exactly one place, the
:class:`ctcasr.models.GlobalCMVN` layer at the input of every model, so that the checkpoint
(and any export) carries them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio.compliance.kaldi as kaldi

from ctcasr.config import FbankConfig


def fbank(wave: torch.Tensor, cfg: FbankConfig, warp: float = 1.0) -> torch.Tensor:
    """[num_samples] float waveform in [-1, 1] -> [num_frames, num_mel_bins] log-mel.

    ``warp`` != 1 warps the mel filterbank's frequency axis as Kaldi's VTLN does (piecewise
    linear, ``vtln_low`` 100 Hz and ``vtln_high`` Nyquist - 500 Hz): training-time VTLP."""
    # Kaldi's fbank expects 16-bit sample values; scale to keep Kaldi's energy floor meaningful.
    feats = kaldi.fbank(
        wave.unsqueeze(0) * 32768.0,
        num_mel_bins=cfg.num_mel_bins,
        frame_length=cfg.frame_length_ms,
        frame_shift=cfg.frame_shift_ms,
        dither=cfg.dither,
        energy_floor=0.0,
        low_freq=cfg.low_freq,
        high_freq=cfg.high_freq,
        sample_frequency=cfg.sample_rate,
        vtln_warp=warp,
    )
    if cfg.utterance_cmn and feats.shape[0] > 0:
        feats = feats - feats.mean(0, keepdim=True)
    return feats


def window_hop(cfg: FbankConfig) -> tuple[int, int]:
    """Samples per analysis window and per frame shift."""
    return (int(cfg.sample_rate * cfg.frame_length_ms / 1000),
            int(cfg.sample_rate * cfg.frame_shift_ms / 1000))


def num_frames(num_samples: int, cfg: FbankConfig) -> int:
    """Frames ``fbank`` returns for ``num_samples`` samples (Kaldi's snip_edges=True)."""
    win, hop = window_hop(cfg)
    return 0 if num_samples < win else 1 + (num_samples - win) // hop


def samples_for_frames(frames: int, cfg: FbankConfig) -> int:
    """The fewest samples that give ``frames`` (>= 1) frames."""
    win, hop = window_hop(cfg)
    return win + (frames - 1) * hop


def frame_seconds(subsampling: int, cfg: FbankConfig) -> float:
    """Seconds per model output frame (output frame ``t`` starts at ``t x`` this)."""
    return subsampling * cfg.frame_shift_ms / 1000


def frames_for_duration(duration: float, cfg: FbankConfig) -> int:
    return num_frames(round(duration * cfg.sample_rate), cfg)


@dataclass
class CMVNStats:
    """Running sums for a global mean / standard deviation per feature bin (float64)."""

    sum: torch.Tensor
    sum_sq: torch.Tensor
    count: int = 0

    @classmethod
    def empty(cls, dim: int) -> CMVNStats:
        z = torch.zeros(dim, dtype=torch.float64)
        return cls(z, z.clone(), 0)

    def add(self, feats: torch.Tensor) -> None:
        f = feats.to(torch.float64)
        self.sum += f.sum(0)
        self.sum_sq += (f * f).sum(0)
        self.count += f.shape[0]

    def mean_std(self, floor: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
        if self.count == 0:
            raise ValueError("no frames accumulated")
        mean = self.sum / self.count
        var = (self.sum_sq / self.count - mean * mean).clamp_min(floor * floor)
        return mean.float(), var.sqrt().float()
