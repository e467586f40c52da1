"""Open a model file for inference: :func:`open_engine` (the engine for a checkpoint or an ONNX
export) and :func:`load` (``ctcasr.load``: a :class:`Transcriber` that decodes as the model
carries)."""

from __future__ import annotations

import logging
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from ctcasr.decode.context import Hotword
from ctcasr.decode.settings import hotword_list
from ctcasr.environment import widen_onednn_cache
from ctcasr.errors import CtcasrError
from ctcasr.infer.engine import EagerEngine, Engine, OnnxEngine
from ctcasr.infer.export import export
from ctcasr.infer.transcriber import Transcriber


def open_engine(path: str | Path, int8: bool = False, threads: int = 0,
                device: str = "cpu", precision: str = "fp32") -> Engine:
    """An engine for a checkpoint (``.pt`` from training) or an ONNX export; ``int8`` quantises
    a checkpoint's model (through an int8 ONNX export; exports are quantised when exported);
    ``threads`` > 0 sets torch's intra-op threads and onnxruntime's; ``precision`` (a
    checkpoint's): ``bf16`` / ``fp16`` autocast where the device computes in it natively."""
    path = Path(path)
    if not path.is_file():
        raise CtcasrError(f"{path}: model file not found")
    if threads > 0:
        torch.set_num_threads(threads)
    widen_onednn_cache()  # batched bf16 decoding meets as many shapes as training does
    checkpoint = model_kind(path) == "checkpoint"
    if precision != "fp32" and (int8 or not checkpoint):
        raise CtcasrError(f"--precision {precision}: for checkpoints run in PyTorch; int8 and "
                          "ONNX exports run in their own precision")
    if checkpoint:
        if not int8:
            return EagerEngine.open(path, device, precision)
        if device != "cpu":
            raise CtcasrError("--int8 runs on the CPU only (dynamic quantisation)")
        logging.getLogger(__name__).info("%s: exporting to int8 ONNX for --int8", path)
        with tempfile.TemporaryDirectory(prefix="ctcasr-int8-") as tmp:
            out, _ = export(path, "onnx", Path(tmp) / "model.int8.onnx", int8=True)
            return OnnxEngine.open(out, threads)
    if device != "cpu":
        raise CtcasrError(f"{path}: exported models run on the CPU here (--device cpu)")
    engine = OnnxEngine.open(path, threads)
    if int8 and not engine.info.int8:
        raise CtcasrError(f"{path}: not quantised; export it with --int8 (int8 is chosen at "
                          "export time for exported models)")
    return engine


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


def load(
    model: str | Path,
    *,
    decoder: str | None = None,
    beam: int | None = None,
    lm: str | Path | None = None,
    lm_weight: float | None = None,
    word_bonus: float | None = None,
    unk_penalty: float | None = None,
    vocab: str | Path | None = None,
    hotwords: str | Path | Sequence[str | Hotword] | None = None,
    int8: bool = False,
    threads: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    timestamps: bool = True,
    chunk_seconds: float = 30.0,
    overlap_seconds: float = 2.0,
    batch_seconds: float = 120.0,
) -> Transcriber:
    """A :class:`Transcriber` for ``model``: a training checkpoint, or a file written by
    ``ctcasr export`` (ONNX; running it needs the ``onnx`` extra).

    It decodes as the model carries (the decoder and LM that ``ctcasr tune-lm`` chose, so as
    the recipe that made it reported; greedy for a model that carries nothing); each argument
    given changes that: ``decoder`` ``greedy`` or ``beam`` (prefix beam search of ``beam``
    prefixes, CLI ``--beam-size``), ``lm`` a word n-gram LM in ARPA format (``"none"``: beam
    search without the carried LM), ``lm_weight``, ``word_bonus`` (added per word),
    ``unk_penalty`` (added per word the LM does not know; ``-inf``: only its words), ``vocab``
    a file of words, with counts, it may output besides the LM's; ``hotwords`` phrases to
    prefer (a hotwords file, or a list of phrases; :mod:`ctcasr.decode.context`).
    ``int8``: dynamic int8 quantisation of a checkpoint's model (through an int8 ONNX export).
    ``threads`` > 0 sets the intra-op threads. ``precision``: ``bf16`` or ``fp16`` autocast of
    a checkpoint's model, where the device computes in it natively (refused elsewhere: an AVX2
    CPU would emulate it, slower than fp32). Inputs longer than ``chunk_seconds`` are decoded
    in windows overlapping by ``overlap_seconds``; a batch holds at most ``batch_seconds`` of
    padded audio.
    """
    engine = open_engine(model, int8=int8, threads=threads, device=device, precision=precision)
    settings = engine.info.decoding.override(decoder, lm, vocab, beam=beam, lm_weight=lm_weight,
                                             word_bonus=word_bonus, unk_penalty=unk_penalty,
                                             hotwords=hotword_list(hotwords))
    return Transcriber(engine, settings, timestamps, chunk_seconds, overlap_seconds,
                       batch_seconds)
