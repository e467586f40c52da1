"""A model from waveforms in one exportable graph: padded waves -> fbank -> CTC log-probs.

:class:`BatchFbank` is ``ctcasr.data.features.fbank`` (torchaudio's Kaldi fbank, as training
computes it) for a padded batch, written with operations that ``torch.export`` and the ONNX
exporter take with a symbolic batch size and length: torchaudio's own function sizes its frames
with Python integers, so an export of it keeps the example's length (docs/inference.md). Its
pieces are Kaldi's, in Kaldi's order, for each frame: remove the DC offset, pre-emphasis 0.97,
Povey window, zero-padding to a power of two, power spectrum, mel filterbank (torchaudio's
``get_mel_banks``), log with the float epsilon floor; then the optional utterance CMN over the
real frames. The power spectrum is a matrix product with the DFT's cosine and sine tables, not
``torch.fft``, which neither exporter maps to ONNX. Every frame depends on its own samples only,
so the padded batch gives each utterance the frames it would get alone
(``tests/test_export.py``: within 2e-4 of ``fbank``'s log-mels, whose values are 10-25). Dither
is left out (inference is deterministic).
"""

from __future__ import annotations

import math

import torch
import torchaudio.compliance.kaldi as kaldi
from torch import nn

from ctcasr.config import FbankConfig
from ctcasr.data.features import window_hop
from ctcasr.models.mask import make_pad_mask

PREEMPHASIS = 0.97  # Kaldi's (and torchaudio's) defaults, as ctcasr's fbank uses them
POVEY = 0.85
VTLN_LOW, VTLN_HIGH = 100.0, -500.0


class BatchFbank(nn.Module):
    """``forward(waves [B, N], wave_lens [B]) -> (feats [B, T, F], feat_lens [B])``; waves in
    [-1, 1] at ``cfg.sample_rate``; padded frames are 0."""

    def __init__(self, cfg: FbankConfig) -> None:
        super().__init__()
        self.win, self.hop = window_hop(cfg)
        nfft = 1 << math.ceil(math.log2(self.win))
        self.utterance_cmn = cfg.utterance_cmn
        window = torch.hann_window(self.win, periodic=False, dtype=torch.float32).pow(POVEY)
        mel, _ = kaldi.get_mel_banks(cfg.num_mel_bins, nfft, float(cfg.sample_rate),
                                     cfg.low_freq, cfg.high_freq, VTLN_LOW, VTLN_HIGH, 1.0)
        mel = nn.functional.pad(mel, (0, 1))  # [F, nfft / 2 + 1]: Nyquist's weight is 0
        # a frame is zero beyond win samples, so only the first win rows of the tables count
        n = torch.arange(self.win, dtype=torch.float64).unsqueeze(1)
        k = torch.arange(nfft // 2 + 1, dtype=torch.float64).unsqueeze(0)
        angle = 2 * math.pi * ((n * k) % nfft) / nfft
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("cos", angle.cos().float(), persistent=False)
        self.register_buffer("sin", angle.sin().float(), persistent=False)
        self.register_buffer("mel", mel.T.contiguous().float(), persistent=False)
        self.eps = torch.finfo(torch.float32).eps

    def output_lengths(self, wave_lens: torch.Tensor) -> torch.Tensor:
        """Kaldi's frame count with snip_edges: ``1 + (n - win) // hop`` (0 below one window)."""
        return (torch.div(wave_lens - self.win, self.hop, rounding_mode="floor") + 1).clamp_min(0)

    def forward(self, waves: torch.Tensor,
                wave_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = (waves * 32768.0).unfold(1, self.win, self.hop)  # [B, T, win]
        frames = frames - frames.mean(-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - PREEMPHASIS * previous) * self.window
        power = (frames @ self.cos) ** 2 + (frames @ self.sin) ** 2
        feats = (power @ self.mel).clamp_min(self.eps).log()  # [B, T, F]
        lens = self.output_lengths(wave_lens)
        pad = make_pad_mask(lens, feats.shape[1]).unsqueeze(-1)
        if self.utterance_cmn:
            real = (~pad).to(feats.dtype)
            mean = (feats * real).sum(1, keepdim=True) / lens.clamp_min(1).view(-1, 1, 1)
            feats = feats - mean
        return feats.masked_fill(pad, 0.0), lens


class WaveModel(nn.Module):
    """``forward(waves [B, N], wave_lens [B]) -> (log_probs [B, T', V], out_lens [B])``:
    :class:`BatchFbank` then a :class:`ctcasr.models.CTCModel` (CMVN, front end, encoder, head)."""

    def __init__(self, cfg: FbankConfig, model: nn.Module) -> None:
        super().__init__()
        self.fbank = BatchFbank(cfg)
        self.model = model

    def forward(self, waves: torch.Tensor,
                wave_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(*self.fbank(waves, wave_lens))
