"""Inference engines: what turns waveforms into CTC log-probabilities.

One interface, three implementations: ``engine.log_probs(waves) -> [T_i, V] per wave``, waves
1-D float32 at ``engine.info.features.sample_rate``, at least ``engine.min_samples`` long.

- :class:`EagerEngine`: a checkpoint's model in PyTorch, optionally int8 (``torch.ao`` dynamic
  quantisation of its linear and recurrent layers); fbank in Python first.
- :class:`TorchScriptEngine`: a ``ctcasr export --format torchscript`` file, one graph from
  padded waveforms to log-probabilities (fbank + CMVN + encoder + CTC head).
- :class:`OnnxEngine`: a ``ctcasr export --format onnx`` file run by onnxruntime (the ``onnx``
  extra): CMVN + encoder + CTC head; fbank in Python first (it does not export to ONNX, see
  docs/inference.md).

:func:`open_engine` picks one by looking at the file. Exported files carry a :class:`ModelInfo`
(features, subsampling, tokenizer) as JSON: a TorchScript extra file, an ONNX metadata entry.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ctcasr.config import FbankConfig, from_dict
from ctcasr.data.features import fbank, frame_seconds, samples_for_frames
from ctcasr.errors import CtcasrError, first_line
from ctcasr.tokenizer import Tokenizer, tokenizer_from_state

INFO_KEY = "ctcasr.json"  # TorchScript extra file / ONNX metadata key holding the ModelInfo
INFO_FORMAT = 1


@dataclass
class ModelInfo:
    """What running a model needs besides its graph."""

    features: FbankConfig
    subsampling: int  # output frames are this many feature frames
    min_input_frames: int  # the front end's shortest input
    tokenizer: Tokenizer
    encoder: str
    int8: bool = False

    @property
    def frame_s(self) -> float:
        """Seconds per output frame (output frame ``t`` starts at ``t x frame_s``)."""
        return frame_seconds(self.subsampling, self.features)

    @property
    def min_samples(self) -> int:
        """Shortest waveform (samples) that gives the front end enough feature frames."""
        return samples_for_frames(self.min_input_frames, self.features)

    def to_json(self) -> str:
        tok = dict(self.tokenizer.state_dict())
        if isinstance(tok.get("model"), torch.Tensor):  # SentencePiece: the model's bytes
            tok["model"] = base64.b64encode(tok["model"].numpy().tobytes()).decode("ascii")
        return json.dumps({
            "format": INFO_FORMAT, "features": dataclasses.asdict(self.features),
            "subsampling": self.subsampling, "min_input_frames": self.min_input_frames,
            "tokenizer": tok, "encoder": self.encoder, "int8": self.int8,
        })

    @classmethod
    def from_json(cls, text: str, where: str) -> ModelInfo:
        try:
            d = json.loads(text)
            if d.get("format") != INFO_FORMAT:
                raise ValueError(f"format {d.get('format')!r}, expected {INFO_FORMAT}")
            tok = dict(d["tokenizer"])
            if isinstance(tok.get("model"), str):
                raw = bytearray(base64.b64decode(tok["model"]))
                tok["model"] = torch.frombuffer(raw, dtype=torch.uint8)
            return cls(from_dict(FbankConfig, d["features"], "features"), int(d["subsampling"]),
                       int(d["min_input_frames"]), tokenizer_from_state(tok), str(d["encoder"]),
                       bool(d["int8"]))
        except (ValueError, KeyError, TypeError, CtcasrError) as e:
            raise CtcasrError(f"{where}: bad ctcasr model information ({first_line(e)})") from None


class Engine:
    """Base: ``log_probs(waves)`` for a list of 1-D waveforms."""

    info: ModelInfo
    kind = ""

    @property
    def min_samples(self) -> int:
        return self.info.min_samples

    def log_probs(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.kind + (" int8" if self.info.int8 else "")


class FeatureEngine(Engine):
    """fbank (``ctcasr.data.features.fbank``) in Python, then ``run(feats, feat_lens)``."""

    def run(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.inference_mode()
    def log_probs(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = [fbank(w, self.info.features) for w in waves]
        lens = torch.tensor([f.shape[0] for f in feats])
        lp, out_lens = self.run(pad_sequence(feats, batch_first=True), lens)
        return [lp[i, :n] for i, n in enumerate(out_lens.tolist())]


class EagerEngine(FeatureEngine):
    kind = "eager"

    def __init__(self, model: nn.Module, info: ModelInfo, device: torch.device) -> None:
        self.model, self.info, self.device = model, info, device

    def run(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lp, out_lens = self.model(feats.to(self.device), lens.to(self.device))
        return lp.cpu(), out_lens.cpu()


class OnnxEngine(FeatureEngine):
    kind = "onnx"

    def __init__(self, session: Any, info: ModelInfo) -> None:
        self.session, self.info = session, info

    def run(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lp, out_lens = self.session.run(None, {"feats": feats.numpy(), "feat_lens": lens.numpy()})
        return torch.from_numpy(lp), torch.from_numpy(out_lens)


class TorchScriptEngine(Engine):
    kind = "torchscript"

    def __init__(self, module: torch.jit.ScriptModule, info: ModelInfo) -> None:
        self.module, self.info = module, info

    @torch.inference_mode()
    def log_probs(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        lens = torch.tensor([w.shape[0] for w in waves])
        lp, out_lens = self.module(pad_sequence(waves, batch_first=True), lens)
        return [lp[i, :n] for i, n in enumerate(out_lens.tolist())]


# --------------------------------------------------------------------------- quantisation
@contextmanager
def quiet_torch():
    """Silence the deprecation and tracer warnings of torch.ao / torch.jit / torch.onnx (all are
    deprecated in torch 2.11 but still the working paths; see docs/inference.md)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # the ONNX exporter's RNN note: tested, other batch sizes work (tests/test_export.py)
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size")
        yield


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantisation (weights int8, activations quantised per batch) of the
    linear and recurrent layers; the front end's convolutions stay float. CPU only."""
    with quiet_torch():
        return torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8)


# --------------------------------------------------------------------------- loading
def info_from_recognizer(rec: Any) -> ModelInfo:
    """The ModelInfo of a loaded checkpoint (``ctcasr.decode.runner.Recognizer``)."""
    return ModelInfo(rec.config.data.features, rec.model.frontend.factor,
                     rec.model.frontend.min_input_frames, rec.tokenizer, rec.config.model.encoder)


def set_threads(threads: int) -> None:
    """``threads > 0``: torch intra-op threads (onnxruntime sessions get theirs on creation)."""
    if threads > 0:
        torch.set_num_threads(threads)


def open_engine(path: str | Path, int8: bool = False, threads: int = 0,
                device: str = "cpu") -> Engine:
    """An engine for a checkpoint (``.pt`` from training), a TorchScript export or an ONNX
    export; ``int8`` quantises a checkpoint's model (exports are quantised when exported)."""
    path = Path(path)
    if not path.is_file():
        raise CtcasrError(f"{path}: model file not found")
    set_threads(threads)
    kind = model_kind(path)
    if kind == "checkpoint":
        from ctcasr.decode.runner import load_recognizer

        rec = load_recognizer(path, device)
        info = info_from_recognizer(rec)
        model = rec.model
        if int8:
            if rec.device.type != "cpu":
                raise CtcasrError("--int8 runs on the CPU only (dynamic quantisation)")
            model, info.int8 = quantize_int8(model), True
        return EagerEngine(model, info, rec.device)
    if device != "cpu":
        raise CtcasrError(f"{path}: exported models run on the CPU here (--device cpu)")
    if kind == "torchscript":
        extra = {INFO_KEY: ""}
        try:
            with quiet_torch():
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as e:
            raise CtcasrError(f"{path}: not a readable TorchScript file ({first_line(e)})") \
                from None
        info = ModelInfo.from_json(extra[INFO_KEY], str(path))
        engine: Engine = TorchScriptEngine(module.eval(), info)
    else:
        engine = OnnxEngine(*_onnx_session(path, threads))
    if int8 and not engine.info.int8:
        raise CtcasrError(f"{path}: not quantised; export it with --int8 (int8 is chosen at "
                          "export time for exported models)")
    return engine


def model_kind(path: Path) -> str:
    """``checkpoint``, ``torchscript`` or ``onnx``, from the file's content."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/extra/" + INFO_KEY) for n in names):
            return "torchscript"
        if any(n.endswith("/constants.pkl") for n in names):
            raise CtcasrError(f"{path}: a TorchScript file not written by `ctcasr export` "
                              f"(it lacks {INFO_KEY})")
        return "checkpoint"
    with path.open("rb") as f:
        first = f.read(1)
    # an ONNX ModelProto starts with its ir_version field (tag 0x08)
    if path.suffix == ".onnx" or (first == b"\x08" and path.suffix != ".pt"):
        return "onnx"
    return "checkpoint"  # load_checkpoint says what is wrong with it


def _onnx_session(path: Path, threads: int) -> tuple[Any, ModelInfo]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise CtcasrError(f"{path}: running ONNX models needs onnxruntime: "
                          "pip install 'ctcasr[onnx]'") from None
    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # no busy-waiting after a run: those threads would take the cores from torch's fbank and
    # decoding, which run between the runs (it made batch-1 transcription 5x slower)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types on a bad file
        raise CtcasrError(f"{path}: not a readable ONNX file ({first_line(e)})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if INFO_KEY not in meta:
        raise CtcasrError(f"{path}: an ONNX file not written by `ctcasr export` (no {INFO_KEY} "
                          "metadata)")
    return session, ModelInfo.from_json(meta[INFO_KEY], str(path))
