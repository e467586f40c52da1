"""Self-contained checkpoints, written atomically and loaded with ``weights_only=True``: the one
place models are saved (:func:`model_checkpoint`, :func:`save_checkpoint`) and loaded
(:func:`load_model`).

A checkpoint is a dict of tensors and plain Python values only::

    {"format": 1, "config": {...resolved config...}, "model": state_dict,
     "tokenizer": {...}, "feature_dim": int, "vocab_size": int,
     "decoding": {...} | absent,        # what ``ctcasr tune-lm`` chose, with the LM
     "train_state": {...} | absent}     # optimizer, scheduler, RNG, sampler position, step

The CMVN statistics are buffers of the model's state dict. Writing goes to a temporary file in
the same folder, then ``fsync`` + ``os.replace`` + ``fsync`` of the folder: a crash (or kill -9,
or a full disk) leaves the old file or the new one, never a torn one. Temporary names are
``.NAME.XXXXXXXX.tmp``: never read as checkpoints, and removed by :func:`remove_temporaries`.
"""

from __future__ import annotations

import os
import pickle
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from ctcasr.config import Config
from ctcasr.decode.settings import DecodeSettings
from ctcasr.errors import CtcasrError, first_line
from ctcasr.models import CTCModel, build_model
from ctcasr.tokenizer import Tokenizer, tokenizer_from_state

FORMAT = 1
# Test hook: seconds to wait between writing the temporary file and renaming it, so that a test
# can kill the process while a checkpoint is being written.
PAUSE_ENV = "CTCASR_TEST_CHECKPOINT_PAUSE"


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    _write_atomic(Path(path), lambda f: torch.save({"format": FORMAT, **obj}, f))


def model_checkpoint(config: Any, model: torch.nn.Module, tokenizer: Any) -> dict[str, Any]:
    """A weights-only checkpoint of ``model`` (``config``: its :class:`ctcasr.config.Config`),
    as ``model.pt`` holds; pass it to :func:`save_checkpoint`."""
    return {"config": config.to_dict(), "model": model.state_dict(),
            "tokenizer": tokenizer.state_dict(),
            "feature_dim": config.data.features.num_mel_bins, "vocab_size": tokenizer.vocab_size}


@dataclass
class LoadedModel:
    """A checkpoint's model, rebuilt from the file alone, in eval mode on ``device``."""

    config: Config
    model: CTCModel
    tokenizer: Tokenizer
    decoding: DecodeSettings  # what it carries (greedy when nothing)
    device: torch.device


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The model of checkpoint ``path`` with its config, tokenizer and decoding settings."""
    ckpt = load_checkpoint(path)
    cfg = Config.from_dict(ckpt["config"])
    tokenizer = tokenizer_from_state(ckpt["tokenizer"])
    dim = ckpt["feature_dim"]
    model = build_model(cfg.model, dim, tokenizer.vocab_size, torch.zeros(dim), torch.ones(dim))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CtcasrError(f"{path}: its weights do not fit its own config "
                          f"({first_line(e).rstrip(':. ')})") from None
    device = torch.device(device)
    model.to(device).eval()
    carried = ckpt.get("decoding")
    decoding = DecodeSettings.from_state(carried, str(path)) if carried else DecodeSettings()
    return LoadedModel(cfg, model, tokenizer, decoding, device)


def copy_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Copy a checkpoint file, atomically like :func:`save_checkpoint`."""
    with Path(src).open("rb") as s:
        _write_atomic(Path(dst), lambda f: shutil.copyfileobj(s, f))


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that an interrupted save left in ``folder``."""
    stale = sorted(Path(folder).glob(".*.pt.????????.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # os.open honours the umask (mkstemp would make the checkpoint private to its owner)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if os.environ.get(PAUSE_ENV):
            time.sleep(float(os.environ[PAUSE_ENV]))
        os.replace(tmp, path)
    except Exception as e:
        tmp.unlink(missing_ok=True)
        what = e.strerror if isinstance(e, OSError) and e.strerror else \
            f"{type(e).__name__}: {first_line(e)}"
        raise CtcasrError(
            f"{path}: could not write checkpoint ({what}); the previous {path.name}, if any, "
            "is intact"
        ) from e
    except BaseException:  # KeyboardInterrupt, SystemExit: clean up, let it through
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CtcasrError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        code = next((x.strip() for x in str(e).splitlines() if "Unsupported global" in x), None)
        if code is None:
            raise CtcasrError(f"{path}: not a readable checkpoint (not a torch.save file of "
                              "tensors and plain data)") from None
        raise CtcasrError(
            f"{path}: refused to load: it holds pickled objects besides tensors and plain data "
            f"(possibly code), which ctcasr never writes ({code})"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CtcasrError(f"{path}: not a readable checkpoint ({first_line(e)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise CtcasrError(f"{path}: not a ctcasr checkpoint (format {FORMAT})")
    return ckpt


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
