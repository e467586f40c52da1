"""Front ends that sit between the features and the encoder.

``Conv2dSubsampling`` (as in ESPnet / WeNet): 2-D convolutions over (time, frequency) that
shorten time by 4, 6 or 8, then a linear projection to ``dim``. With ``separable``, every
convolution after the first is depthwise-separable (a depthwise convolution with the stride,
then a 1 x 1 across channels, as Squeezeformer's front end): at 144 channels about 8x fewer
multiply-adds than the full 3 x 3, the same lengths and receptive fields. It owns its length
formula, :meth:`output_lengths`; output frame ``t`` only sees input frames ``< lengths`` (the
formula keeps every receptive field inside the real frames), so padding cannot leak into real
outputs.
``subsampling: 1`` is a plain linear projection (or identity when ``dim`` is 0).
"""

from __future__ import annotations

import torch
from torch import nn

from ctcasr.config import FrontendConfig
from ctcasr.errors import CtcasrError
from ctcasr.models.dropout import Dropout

# (kernel, stride) of each time-reducing convolution, per subsampling factor.
_LAYERS = {4: [(3, 2), (3, 2)], 6: [(3, 2), (5, 3)], 8: [(3, 2), (3, 2), (3, 2)]}


class Conv2dSubsampling(nn.Module):
    """``forward(x [B,T,F], lens [B]) -> (y [B,T',dim], lens' [B])``."""

    def __init__(self, input_dim: int, cfg: FrontendConfig) -> None:
        super().__init__()
        self.factor = cfg.subsampling
        self.layers = _LAYERS.get(cfg.subsampling, [])
        convs: list[nn.Module] = []
        freq, in_ch = input_dim, 1
        # oneDNN's bf16 convolution on AMX CPUs returns garbage (NaN, 1e37) when its output is
        # one bin wide (torch 2.14.1; 7 to 10 feature bins at x4): such a stack runs in fp32
        # on the CPU whatever the autocast (tests/test_models.py)
        self.fp32_on_cpu = False
        for k, s in self.layers:
            if cfg.separable and in_ch == cfg.channels:
                convs += [nn.Conv2d(in_ch, in_ch, k, s, groups=in_ch), nn.Conv2d(in_ch, in_ch, 1)]
            else:
                convs.append(nn.Conv2d(in_ch, cfg.channels, k, s))
            convs.append(nn.ReLU())
            freq, in_ch = (freq - k) // s + 1, cfg.channels
            self.fp32_on_cpu |= freq == 1
        if freq < 1:
            raise CtcasrError(f"model.frontend: {input_dim} feature bins are too few to subsample")
        self.conv = nn.Sequential(*convs)
        # Channels-last weights: oneDNN's CPU kernels for the one-channel first convolution and
        # for depthwise ones run 2-3x faster in that layout (the full 3 x 3 across channels
        # does not), and the layout follows the weights.
        for c in convs if cfg.separable else convs[:1]:
            c.to(memory_format=torch.channels_last)
        flat = in_ch * freq
        self.proj = nn.Linear(flat, cfg.dim) if cfg.dim > 0 else nn.Identity()
        self.output_dim = cfg.dim if cfg.dim > 0 else flat
        self.dropout = Dropout(cfg.dropout)
        self.min_input_frames = self._min_frames()

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for k, s in self.layers:
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        return lengths

    def _min_frames(self) -> int:
        t = 1
        while self.output_lengths(torch.tensor(t)) < 1:
            t += 1
        return t

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.fp32_on_cpu and x.device.type == "cpu"):
            return self.conv(x)
        fp32 = {name: p.float() for name, p in self.conv.named_parameters()}  # as is if fp32
        with torch.autocast("cpu", enabled=False):
            return torch.func.functional_call(self.conv, fp32, (x.float(),)).to(x.dtype)

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.compiler.is_exporting() and int(lens.min()) < self.min_input_frames:
            raise CtcasrError(
                f"input of {int(lens.min())} frames is too short: subsampling x{self.factor} "
                f"needs at least {self.min_input_frames} frames"
            )
        if self.layers:
            y = self._conv(x.unsqueeze(1))  # [B, C, T', F']
            b, c, t, f = y.shape
            x = y.transpose(1, 2).reshape(b, t, c * f)
        return self.dropout(self.proj(x)), self.output_lengths(lens)
