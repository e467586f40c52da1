"""Inference engines: what turns waveforms into CTC log-probabilities.

One interface, two implementations: ``engine.log_probs(waves) -> [T_i, V] per wave``, waves
1-D float32 at ``engine.info.features.sample_rate``, at least ``engine.min_samples`` long.

- :class:`EagerEngine`: a checkpoint's model in PyTorch; fbank in Python first.
- :class:`OnnxEngine`: a ``ctcasr export`` file run by onnxruntime (the ``onnx`` extra), one
  graph from padded waveforms to log-probabilities (fbank + CMVN + encoder + CTC head).

:func:`open_engine` picks one by looking at the file. A checkpoint opened with ``int8`` is
exported to int8 ONNX first (into memory; torch's own ``torch.ao`` quantisation is deprecated).
Exported files carry a :class:`ModelInfo` (features, subsampling, tokenizer) as ONNX metadata.
TorchScript exports (before 2026-12-03) are refused with a message: ``torch.jit.load`` warns
that it is deprecated.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ctcasr.config import FbankConfig, from_dict
from ctcasr.data.features import fbank, frame_seconds, samples_for_frames
from ctcasr.decode.settings import DecodeSettings
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
    """A model in PyTorch: fbank (``ctcasr.data.features.fbank``) in Python, then the model."""

    kind = "eager"

    def __init__(self, model: nn.Module, info: ModelInfo, device: torch.device) -> None:
        self.model, self.info, self.device = model, info, device

    @torch.inference_mode()
    def log_probs(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = [fbank(w, self.info.features) for w in waves]
        lens = torch.tensor([f.shape[0] for f in feats])
        x = pad_sequence(feats, batch_first=True).to(self.device)
        lp, out_lens = self.model(x, lens.to(self.device))
        lp = lp.cpu()
        return [lp[i, :n] for i, n in enumerate(out_lens.tolist())]


class OnnxEngine(Engine):
    kind = "onnx"

    def __init__(self, session: Any, info: ModelInfo) -> None:
        self.session, self.info = session, info

    def log_probs(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        lens = torch.tensor([w.shape[0] for w in waves], dtype=torch.int64)
        batch = pad_sequence([w.float() for w in waves], batch_first=True)
        lp, out_lens = self.session.run(None, {"waves": batch.numpy(), "wave_lens": lens.numpy()})
        return [torch.from_numpy(lp[i, :n]) for i, n in enumerate(out_lens.tolist())]


# --------------------------------------------------------------------------- loading
def info_from_recognizer(rec: Any) -> ModelInfo:
    """The ModelInfo of a loaded checkpoint (``ctcasr.decode.runner.Recognizer``)."""
    return ModelInfo(rec.config.data.features, rec.model.frontend.factor,
                     rec.model.frontend.min_input_frames, rec.tokenizer, rec.config.model.encoder,
                     decoding=rec.decoding)


def set_threads(threads: int) -> None:
    """``threads > 0``: torch intra-op threads (onnxruntime sessions get theirs on creation)."""
    if threads > 0:
        torch.set_num_threads(threads)


def open_engine(path: str | Path, int8: bool = False, threads: int = 0,
                device: str = "cpu") -> Engine:
    """An engine for a checkpoint (``.pt`` from training) or an ONNX export; ``int8`` quantises
    a checkpoint's model (through an int8 ONNX export; exports are quantised when exported)."""
    path = Path(path)
    if not path.is_file():
        raise CtcasrError(f"{path}: model file not found")
    set_threads(threads)
    kind = model_kind(path)
    if kind == "checkpoint":
        from ctcasr.decode.runner import load_recognizer

        if int8:
            if device != "cpu":
                raise CtcasrError("--int8 runs on the CPU only (dynamic quantisation)")
            return _int8_engine(path, threads)
        rec = load_recognizer(path, device)
        return EagerEngine(rec.model, info_from_recognizer(rec), rec.device)
    if device != "cpu":
        raise CtcasrError(f"{path}: exported models run on the CPU here (--device cpu)")
    engine = OnnxEngine(*_onnx_session(path, threads))
    if int8 and not engine.info.int8:
        raise CtcasrError(f"{path}: not quantised; export it with --int8 (int8 is chosen at "
                          "export time for exported models)")
    return engine


def _int8_engine(checkpoint: Path, threads: int) -> Engine:
    """A checkpoint's model quantised to int8: exported to int8 ONNX in a temporary directory
    (a few seconds) and run by onnxruntime, as ``ctcasr export --int8`` would."""
    from ctcasr.infer.export import export

    logging.getLogger(__name__).info("%s: exporting to int8 ONNX for --int8", checkpoint)
    with tempfile.TemporaryDirectory(prefix="ctcasr-int8-") as tmp:
        out, _ = export(checkpoint, "onnx", Path(tmp) / "model.int8.onnx", int8=True)
        return OnnxEngine(*_onnx_session(out, threads))


def model_kind(path: Path) -> str:
    """``checkpoint`` or ``onnx``, from the file's content."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/constants.pkl") for n in names):
            raise CtcasrError(f"{path}: a TorchScript file; ctcasr no longer runs these "
                              "(torch.jit is deprecated): export the checkpoint again with "
                              "`ctcasr export CKPT` (ONNX)")
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
                          "pip install -e '.[onnx]' (from a checkout)") from None
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
