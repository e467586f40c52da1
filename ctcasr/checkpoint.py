"""Self-contained checkpoints, written atomically and loaded with ``weights_only=True``.

A checkpoint is a dict of tensors and plain Python values only::

    {"format": 1, "config": {...resolved config...}, "model": state_dict,
     "tokenizer": {...}, "feature_dim": int, "vocab_size": int,
     "train_state": {...} | absent}     # optimizer, scheduler, RNG, sampler position, step

The CMVN statistics are buffers of the model's state dict. Writing goes to a temporary file in
the same folder, then ``fsync`` + ``os.replace``: a crash leaves the old file or the new one,
never a torn one. Temporary names end in ``.tmp`` and are never read as checkpoints.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from ctcasr.errors import CtcasrError, first_line

FORMAT = 1


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **obj}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CtcasrError(
                f"{path}: could not write checkpoint ({e.strerror or e}); "
                "the previous checkpoint, if any, is intact"
            ) from None
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
