"""``ctcasr export``: a checkpoint as one self-contained TorchScript or ONNX file.

- **TorchScript**: ``forward(waves [B, N] float32, wave_lens [B] int64) -> (log_probs [B, T', V],
  out_lens [B])``: Kaldi fbank (+ utterance CMN) per utterance, then CMVN, front end, encoder and
  CTC head, all in the graph. The fbank is ``torch.jit.trace`` of ``ctcasr.data.features.fbank``
  on one utterance (its only length-dependent branch, audio shorter than one frame, cannot occur:
  inputs are at least ``min_samples`` long), the model a trace on a padded batch of two, and a
  scripted loop over the batch joins them.
- **ONNX** (``torch.onnx.export(dynamo=False)``, opset 17): ``forward(feats [B, T, F], feat_lens
  [B]) -> (log_probs, out_lens)``: CMVN, front end, encoder, CTC head; the fbank runs in Python
  before it (neither ONNX exporter can take it: the TorchScript-based one has no ``fft_rfft``, the
  dynamo one fixes the input length and has no ``hann_window``).

Both carry the :class:`~ctcasr.infer.engine.ModelInfo` (features, subsampling, tokenizer) as
JSON. ``int8``: TorchScript traces the ``torch.ao`` dynamically quantised model; ONNX goes through
``onnxruntime.quantization.quantize_dynamic`` (int8 weights, per channel). After writing, the
file is run on a batch of lengths it was not traced with and compared with the checkpoint's
model (:func:`check_export`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ctcasr.config import FbankConfig
from ctcasr.data.features import fbank
from ctcasr.decode.runner import load_recognizer
from ctcasr.errors import CtcasrError
from ctcasr.infer.engine import (
    INFO_KEY,
    EagerEngine,
    Engine,
    ModelInfo,
    info_from_recognizer,
    open_engine,
    quantize_int8,
    quiet_torch,
)

FORMATS = ("torchscript", "onnx")
OPSET = 17
CHECK_TOLERANCE = 1e-3  # max |log-prob difference| of a float export (measured: ~1e-6)


class Features(nn.Module):
    """One utterance's waveform [N] -> fbank [T, F] (traced)."""

    def __init__(self, cfg: FbankConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return fbank(wave, self.cfg)


class WaveModel(nn.Module):
    """Padded waveforms -> log-probs: per-utterance features, padded, then the model
    (scripted around the two traced parts)."""

    def __init__(self, features: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.model = model

    def forward(self, waves: torch.Tensor,
                wave_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats: list[torch.Tensor] = []
        for b in range(waves.shape[0]):
            feats.append(self.features(waves[b, : int(wave_lens[b])]))
        lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        return self.model(x, lens)


def default_output(checkpoint: Path, fmt: str, int8: bool) -> Path:
    suffix = (".int8" if int8 else "") + (".onnx" if fmt == "onnx" else ".ts")
    return checkpoint.with_suffix(suffix)


def export(checkpoint: str | Path, fmt: str, out: str | Path | None = None,
           int8: bool = False) -> tuple[Path, float]:
    """Write the export; returns its path and the largest log-prob difference from the
    checkpoint's model (int8: from its float model) on a batch it was not traced with."""
    if fmt not in FORMATS:
        raise CtcasrError(f"unknown export format {fmt!r} (choose {', '.join(FORMATS)})")
    checkpoint = Path(checkpoint)
    out = Path(out) if out else default_output(checkpoint, fmt, int8)
    rec = load_recognizer(checkpoint)
    info = info_from_recognizer(rec)
    info.int8 = int8
    model = rec.model
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        _torchscript(quantize_int8(model) if int8 else model, info, out)
    else:
        _onnx(model, info, out)
    reference = EagerEngine(model, info_from_recognizer(rec), rec.device)
    diff = check_export(open_engine(out, int8=int8), reference)
    if not int8 and diff > CHECK_TOLERANCE:
        raise CtcasrError(f"{out}: the export differs from the checkpoint's model by {diff:.2g} "
                          f"in log-probability (more than {CHECK_TOLERANCE}); please report it")
    return out, diff


def example_batch(info: ModelInfo, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of two random feature sequences, ``n`` and ``n // 2 + min`` frames."""
    g = torch.Generator().manual_seed(0)
    lens = torch.tensor([n, n // 2 + info.min_input_frames])
    return torch.randn(2, n, info.features.num_mel_bins, generator=g), lens


def _torchscript(model: nn.Module, info: ModelInfo, out: Path) -> None:
    sr = info.features.sample_rate
    with quiet_torch(), torch.no_grad():
        feats = torch.jit.trace(Features(info.features), (torch.zeros(sr),), check_trace=False)
        traced = torch.jit.trace(model, example_batch(info, 200), check_trace=False)
        scripted = torch.jit.script(WaveModel(feats, traced))
    def write(tmp: str) -> None:
        with quiet_torch():
            torch.jit.save(scripted, tmp, _extra_files={INFO_KEY: info.to_json()})

    _write(out, write)


def _onnx(model: nn.Module, info: ModelInfo, out: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise CtcasrError("ONNX export needs onnx and onnxruntime: pip install "
                          "'ctcasr[onnx]'") from None

    def write(tmp: str) -> None:
        with quiet_torch(), torch.no_grad():
            torch.onnx.export(
                model, example_batch(info, 200), tmp, dynamo=False, opset_version=OPSET,
                input_names=["feats", "feat_lens"], output_names=["log_probs", "out_lens"],
                dynamic_axes={"feats": {0: "batch", 1: "frames"}, "feat_lens": {0: "batch"},
                              "log_probs": {0: "batch", 1: "out_frames"},
                              "out_lens": {0: "batch"}},
            )
        if info.int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # its advice to pre-process (measured: no faster)
            try:
                quantize_dynamic(tmp, tmp, weight_type=QuantType.QInt8, per_channel=True)
            finally:
                root.setLevel(level)
        m = onnx.load(tmp)
        entry = m.metadata_props.add()
        entry.key, entry.value = INFO_KEY, info.to_json()
        onnx.save(m, tmp)

    _write(out, write)


def _write(out: Path, write) -> None:
    """``write(tmp_path)``, then rename to ``out`` (no half-written export is ever left)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


def check_export(engine: Engine, reference: Engine, seconds: tuple[float, ...] = (1.3, 0.7, 2.1),
                 ) -> float:
    """Largest |log-prob| difference between two engines on one padded batch of noise."""
    g = torch.Generator().manual_seed(1)
    sr = engine.info.features.sample_rate
    waves = [0.1 * torch.randn(max(round(s * sr), engine.min_samples), generator=g)
             for s in seconds]
    a, b = engine.log_probs(waves), reference.log_probs(waves)
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))
