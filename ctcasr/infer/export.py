"""``ctcasr export``: a checkpoint as one self-contained ONNX file.

``forward(waves [B, N] float32, wave_lens [B] int64) -> (log_probs [B, T', V], out_lens [B])``:
Kaldi fbank (+ utterance CMN), CMVN, front end, encoder and CTC head, all in one graph with a
symbolic batch size and length (:mod:`ctcasr.infer.wavegraph`), written by PyTorch's dynamo ONNX
exporter (``torch.export`` underneath), run by onnxruntime (the ``onnx`` extra). The file carries
the :class:`~ctcasr.infer.engine.ModelInfo` (features, subsampling, tokenizer) as metadata.
``int8``: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, per channel) of the float
export. After writing, the file is run on a batch of lengths it was not exported with and compared
with the checkpoint's model (:func:`check_export`).

No TorchScript (``torch.jit`` is deprecated, as are the TorchScript-based ONNX exporter and
``torch.ao`` quantisation: docs/inference.md). LSTM and
GRU layers export as ONNX ``LSTM`` / ``GRU`` nodes (:mod:`ctcasr.infer.onnx_rnn`); a packed
BiLSTM / BiGRU exports as its equivalent padded form (:func:`exportable`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ctcasr.checkpoint import load_model
from ctcasr.config import RNNConfig
from ctcasr.errors import CtcasrError
from ctcasr.infer.engine import (
    INFO_KEY,
    EagerEngine,
    Engine,
    ModelInfo,
    OnnxEngine,
)
from ctcasr.infer.onnx_rnn import OnnxRNN, translations
from ctcasr.infer.wavegraph import WaveModel
from ctcasr.models.rnn import RNNEncoder

FORMATS = ("onnx",)
CHECK_TOLERANCE = 1e-3  # max |log-prob difference| of a float export
MAX_HOURS = 1  # the longest input the exported graph accepts, per utterance


def default_output(checkpoint: Path, int8: bool) -> Path:
    return checkpoint.with_suffix(".int8.onnx" if int8 else ".onnx")


def export(checkpoint: str | Path, fmt: str = "onnx", out: str | Path | None = None,
           int8: bool = False) -> tuple[Path, float]:
    """Write the export; returns its path and the largest log-prob difference from the
    checkpoint's model (int8: from its float model) on a batch it was not exported with."""
    if fmt == "torchscript":
        raise CtcasrError("TorchScript export was removed: torch.jit is deprecated (torch 2.14 "
                          "warns on every call); export to ONNX (--format onnx, the default)")
    if fmt not in FORMATS:
        raise CtcasrError(f"unknown export format {fmt!r} (choose {', '.join(FORMATS)})")
    checkpoint = Path(checkpoint)
    out = Path(out) if out else default_output(checkpoint, int8)
    loaded = load_model(checkpoint, "cpu")
    info = dataclasses.replace(ModelInfo.of(loaded), int8=int8)
    out.parent.mkdir(parents=True, exist_ok=True)
    _onnx(exportable(loaded.model), info, out)
    reference = EagerEngine(loaded.model, ModelInfo.of(loaded), loaded.device)
    diff = check_export(OnnxEngine.open(out), reference)
    if not int8 and diff > CHECK_TOLERANCE:
        raise CtcasrError(f"{out}: the export differs from the checkpoint's model by {diff:.2g} "
                          f"in log-probability (more than {CHECK_TOLERANCE}); please report it")
    return out, diff


def exportable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in the form ``torch.export`` takes: in an RNN encoder, a packed
    BiLSTM / BiGRU (one ``nn.LSTM`` over packed sequences) becomes the padded form (one RNN per
    layer and direction, the backward one over reversed sequences) with the same weights, and
    every RNN layer an :class:`~ctcasr.infer.onnx_rnn.OnnxRNN` (one ONNX node)."""
    enc = getattr(model, "encoder", None)
    if not isinstance(enc, RNNEncoder):
        return model
    model = copy.deepcopy(model)  # the checkpoint's model stays as it is (the check's reference)
    if enc.impl == "packed":
        rnn = enc.rnn
        cfg = RNNConfig(hidden_size=rnn.hidden_size, num_layers=rnn.num_layers, dropout=0.0,
                        bidirectional=rnn.bidirectional, impl="reverse")
        padded = RNNEncoder("gru" if isinstance(rnn, nn.GRU) else "lstm", rnn.input_size, cfg)
        for i in range(rnn.num_layers):
            for layer, suffix in ((padded.forward_layers[i], ""),
                                  *(((padded.backward_layers[i], "_reverse"),)
                                    if rnn.bidirectional else ())):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(layer, f"{name}_l0").data.copy_(getattr(rnn, f"{name}_l{i}{suffix}"))
        model.encoder = padded.eval()
    for layers in (model.encoder.forward_layers, model.encoder.backward_layers):
        for i, layer in enumerate(layers):
            layers[i] = OnnxRNN(layer)
    return model


def _onnx(model: nn.Module, info: ModelInfo, out: Path) -> None:
    try:
        import onnx
        import onnxruntime  # noqa: F401  (what runs the file; say so now, not after exporting)
        import onnxscript  # noqa: F401
    except ImportError:
        raise CtcasrError("ONNX export needs onnx, onnxscript and onnxruntime: pip install "
                          "-e '.[onnx]' (from a checkout)") from None
    graph = WaveModel(info.features, model).eval()
    sr = info.features.sample_rate
    batch = torch.export.Dim("batch", min=1, max=4096)
    samples = torch.export.Dim("samples", min=info.min_samples, max=sr * 3600 * MAX_HOURS)
    g = torch.Generator().manual_seed(0)
    example = (0.1 * torch.randn(2, 2 * sr, generator=g), torch.tensor([2 * sr, sr]))

    def write(tmp: str) -> None:
        with torch.no_grad(), _quiet_exporter():
            torch.onnx.export(
                graph, example, tmp, dynamo=True, external_data=False,
                custom_translation_table=translations(),
                input_names=["waves", "wave_lens"], output_names=["log_probs", "out_lens"],
                dynamic_shapes=({0: batch, 1: samples}, {0: batch}))
        if info.int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # its advice to pre-process (it did not pay)
            # the fbank's DFT and mel tables stay float (int8 spectra lose the quiet bands),
            # as do the front end's convolutions; matrix products with weights go to int8
            fbank_nodes = [n.name for n in onnx.load(tmp).graph.node
                           if any(i.startswith("fbank.") for i in n.input)]
            try:
                quantize_dynamic(tmp, tmp, weight_type=QuantType.QInt8, per_channel=True,
                                 op_types_to_quantize=["MatMul", "Gemm", "LSTM"],
                                 nodes_to_exclude=fbank_nodes,
                                 extra_options={"MatMulConstBOnly": True})
            finally:
                root.setLevel(level)
        m = onnx.load(tmp)
        entry = m.metadata_props.add()
        entry.key, entry.value = INFO_KEY, info.to_json()
        onnx.save(m, tmp)

    _write(out, write)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress lines (printed, and logged at INFO) are not the user's business,
    nor is its warning that the batch axis is named twice (both inputs have it)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="# The axis name: batch will not be used")
        for name in ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo"):
            logger = logging.getLogger(name)
            stack.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.WARNING)
        yield


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
