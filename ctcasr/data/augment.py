"""Training-only augmentation: speed perturbation and white noise (on the waveform), VTLP (a
warped mel filterbank) and SpecAugment (on fbank).

All use torchaudio (``torchaudio.functional.speed``, the ``vtln_warp`` of Kaldi's fbank,
``torchaudio.transforms.FrequencyMasking`` / ``TimeMasking``). Every random draw for an
utterance comes from a generator seeded by ``(seed, epoch, index)``, so augmentation is a pure
function of where we are in training: the same in DataLoader workers as in the main process,
and the same after ``--resume``.
Masks are applied to the raw log-mel features with value 0, before CMVN (as ESPnet and WeNet do).
With ``views`` = 2 (CR-CTC) an utterance comes out twice: the same waveform augmentation (speed,
VTLP, noise), two independent SpecAugment draws with ``cr_time_masks_factor`` times the time masks.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
import torchaudio.transforms as T

from ctcasr.config import AugmentConfig


class Augmenter:
    def __init__(self, cfg: AugmentConfig, sample_rate: int, seed: int, views: int = 1) -> None:
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.seed = seed
        self.views = views
        self.freq_mask = T.FrequencyMasking(cfg.freq_mask_width)
        self.time_mask = T.TimeMasking(cfg.time_mask_width, p=cfg.time_mask_ratio)

    def _seed(self, epoch: int, index: int) -> int:
        return ((self.seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**63)

    def _choose(self, choices: list[float], seed: int) -> float:
        if len(choices) == 1:
            return choices[0]
        gen = torch.Generator().manual_seed(seed)
        return choices[int(torch.randint(len(choices), (1,), generator=gen))]

    def speed(self, epoch: int, index: int) -> float:
        """The speed factor for utterance ``index`` in ``epoch``."""
        return self._choose(self.cfg.speeds, self._seed(epoch, index))

    def warp(self, epoch: int, index: int) -> float:
        """The VTLP warp factor for utterance ``index`` in ``epoch`` (drawn apart from speed)."""
        return self._choose(self.cfg.warps, self._seed(epoch, index) + 2)

    def noisy(self, epoch: int, index: int) -> bool:
        """Whether utterance ``index`` gets noise in ``epoch``."""
        p = self.cfg.noise_prob
        if p <= 0.0:
            return False
        gen = torch.Generator().manual_seed(self._seed(epoch, index) + 3)
        return bool(torch.rand(1, generator=gen) < p)

    def add_noise(self, wave: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        """``wave`` + white noise at an SNR drawn uniformly from ``noise_snr`` (dB)."""
        gen = torch.Generator().manual_seed(self._seed(epoch, index) + 4)
        lo, hi = self.cfg.noise_snr
        snr = lo + (hi - lo) * float(torch.rand(1, generator=gen))
        power = wave.pow(2).mean().clamp_min(1e-10)
        noise = torch.randn(wave.shape, generator=gen)
        return wave + noise * (power / 10 ** (snr / 10)).sqrt()

    def perturb_speed(self, wave: torch.Tensor, factor: float) -> torch.Tensor:
        """Play ``factor`` times faster (tempo and pitch, like sox ``speed``)."""
        if factor == 1.0:
            return wave
        return AF.speed(wave, self.sample_rate, factor)[0]

    def spec_augment(self, feats: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        """[T, F] -> [T, F] with frequency and time masks (a new tensor); with ``views`` > 1,
        [views, T, F]: each copy its own draw."""
        if self.views == 1:
            return self._masked(feats, epoch, index, None)
        return torch.stack([self._masked(feats, epoch, index, v) for v in range(self.views)])

    def _masked(self, feats: torch.Tensor, epoch: int, index: int, view: int | None
                ) -> torch.Tensor:
        cfg = self.cfg
        if (cfg.freq_masks == 0 and cfg.time_masks == 0) or epoch + 1 < cfg.spec_start_epoch:
            return feats
        time_masks = cfg.time_masks if view is None else \
            round(cfg.time_masks * cfg.cr_time_masks_factor)
        spec = feats.t().clone()  # torchaudio masks [..., freq, time]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed(epoch, index) + (1 if view is None else 5 + view))
            for _ in range(cfg.freq_masks):
                spec = self.freq_mask(spec)
            for _ in range(time_masks):
                spec = self.time_mask(spec)
        return spec.t()
