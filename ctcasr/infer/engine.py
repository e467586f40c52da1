"""Inference engines: what turns waveforms into CTC log-probabilities.

One interface, two implementations: ``engine.log_probs(waves) -> [T_i, V] per wave``, waves
1-D float32 at ``engine.info.features.sample_rate``, at least ``engine.min_samples`` long.

- :class:`EagerEngine`: a checkpoint's model in PyTorch; fbank in Python first.
- :class:`OnnxEngine`: a ``ctcasr export`` file run by onnxruntime (the ``onnx`` extra), one
  graph from padded waveforms to log-probabilities (fbank + CMVN + encoder + CTC head).

Both carry a :class:`ModelInfo` (features, subsampling, tokenizer, the decoding the model
carries); exported files keep it as ONNX metadata. :func:`ctcasr.infer.load.open_engine` picks
the engine for a file.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ctcasr.checkpoint import LoadedModel, load_model
from ctcasr.config import FbankConfig, from_dict
from ctcasr.data.features import fbank, frame_seconds, samples_for_frames
from ctcasr.decode.settings import DecodeSettings
from ctcasr.environment import cpu_model, native_16bit
from ctcasr.errors import CtcasrError, first_line
from ctcasr.tokenizer import Tokenizer, tokenizer_from_state

INFO_KEY = "ctcasr.json"  # the ONNX metadata key holding the ModelInfo
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
    decoding: DecodeSettings = DecodeSettings()  # what the model decodes with by default

    @property
    def frame_s(self) -> float:
        """Seconds per output frame (output frame ``t`` starts at ``t x frame_s``)."""
        return frame_seconds(self.subsampling, self.features)

    @property
    def min_samples(self) -> int:
        """Shortest waveform (samples) that gives the front end enough feature frames."""
        return samples_for_frames(self.min_input_frames, self.features)

    @classmethod
    def of(cls, loaded: LoadedModel) -> ModelInfo:
        """A checkpoint's (``ctcasr.checkpoint.load_model``)."""
        front = loaded.model.frontend
        return cls(loaded.config.data.features, front.factor, front.min_input_frames,
                   loaded.tokenizer, loaded.config.model.encoder, decoding=loaded.decoding)

    def to_json(self) -> str:
        tok = dict(self.tokenizer.state_dict())
        if isinstance(tok.get("model"), torch.Tensor):  # SentencePiece: the model's bytes
            tok["model"] = base64.b64encode(tok["model"].numpy().tobytes()).decode("ascii")
        return json.dumps({
            "format": INFO_FORMAT, "features": dataclasses.asdict(self.features),
            "subsampling": self.subsampling, "min_input_frames": self.min_input_frames,
            "tokenizer": tok, "encoder": self.encoder, "int8": self.int8,
            "decoding": self.decoding.state_dict(),
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
            decoding = DecodeSettings.from_state(d["decoding"], where) \
                if d.get("decoding") else DecodeSettings()
            return cls(from_dict(FbankConfig, d["features"], "features"), int(d["subsampling"]),
                       int(d["min_input_frames"]), tokenizer_from_state(tok), str(d["encoder"]),
                       bool(d["int8"]), decoding)
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


class EagerEngine(Engine):
    """A checkpoint's model in PyTorch: fbank (``ctcasr.data.features.fbank``) in Python, then
    the model."""

    kind = "eager"

    def __init__(self, model: nn.Module, info: ModelInfo, device: torch.device,
                 precision: str = "fp32") -> None:
        self.model, self.info, self.device = model, info, device
        self.precision, self.dtype = precision, PRECISIONS[precision]

    @classmethod
    def open(cls, path: Path, device: str | torch.device = "cpu",
             precision: str = "fp32") -> EagerEngine:
        loaded = load_model(path, device)
        check_precision(precision, loaded.device)
        return cls(loaded.model, ModelInfo.of(loaded), loaded.device, precision)

    @property
    def name(self) -> str:
        return self.kind + ("" if self.precision == "fp32" else f" {self.precision}")

    @torch.inference_mode()
    def log_probs(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = [fbank(w, self.info.features) for w in waves]
        lens = torch.tensor([f.shape[0] for f in feats])
        x = pad_sequence(feats, batch_first=True).to(self.device)
        with torch.autocast(self.device.type, self.dtype, enabled=self.dtype != torch.float32):
            lp, out_lens = self.model(x, lens.to(self.device))
        lp = lp.float().cpu()
        return [lp[i, :n] for i, n in enumerate(out_lens.tolist())]


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse, in one line, a precision the device does not compute in natively: a CPU without
    AVX512-BF16 / AMX would emulate it, slower than fp32 (and oneDNN's LSTM refuses it)."""
    if precision not in PRECISIONS:
        raise CtcasrError(f"--precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise CtcasrError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no "
                              "bf16; use fp16")
        return
    if not native_16bit()[precision]:
        need = {"bf16": "AVX512-BF16 or AMX-BF16", "fp16": "AMX-FP16"}
        raise CtcasrError(
            f"--precision {precision}: this CPU ({cpu_model()}) has no native {precision} "
            f"arithmetic (it needs {need[precision]}); torch would emulate it, slower than "
            "fp32: use fp32, or --int8 for a smaller and faster CPU model")


class OnnxEngine(Engine):
    """A ``ctcasr export`` file run by onnxruntime: one graph from padded waves to log-probs."""

    kind = "onnx"

    def __init__(self, session: Any, info: ModelInfo) -> None:
        self.session, self.info = session, info

    @classmethod
    def open(cls, path: Path, threads: int = 0) -> OnnxEngine:
        return cls(*_onnx_session(path, threads))

    def log_probs(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        lens = torch.tensor([w.shape[0] for w in waves], dtype=torch.int64)
        batch = pad_sequence([w.float() for w in waves], batch_first=True)
        lp, out_lens = self.session.run(None, {"waves": batch.numpy(), "wave_lens": lens.numpy()})
        return [torch.from_numpy(lp[i, :n]) for i, n in enumerate(out_lens.tolist())]


def _onnx_session(path: Path, threads: int) -> tuple[Any, ModelInfo]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise CtcasrError(f"{path}: running ONNX models needs onnxruntime: "
                          "pip install -e '.[onnx]' (from a checkout)") from None
    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # no busy-waiting after a run: those threads would take the cores from torch's fbank and
    # decoding, which run between the runs
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
