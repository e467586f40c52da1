"""Distributed data parallel (DDP) plumbing, for runs started by ``torchrun``.

``torchrun --nproc_per_node=N -m ctcasr train ...`` sets ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` (and the rendezvous address); :func:`init_distributed` reads them and joins the
process group: NCCL when training on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on
CPU. Without those variables everything here is a no-op for a single process.

How a step is shared (see ``ctcasr.data.sampler``): every process computes the same global list
of batches and takes every ``world_size``-th one; an optimizer step consumes ``world_size x
accum_grad`` consecutive batches of that list, whose utterance count every process knows, so
each process scales its loss by ``world_size / utterances`` and DDP's gradient mean becomes the
per-utterance mean over the whole group -- the same update one process would make accumulating
the same batches.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ctcasr.errors import CtcasrError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when started by torchrun; returns the rank info and the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = select_device(device_name, info)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=info.rank, world_size=world)
    return info, device


def select_device(name: str, info: DistInfo = DistInfo()) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CtcasrError(f"train.device is {name!r} but CUDA is not available")
        if info.enabled:  # one GPU per process
            name = f"cuda:{info.local_rank}"
            torch.cuda.set_device(info.local_rank)
    return torch.device(name)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` for one process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_shared_dir(folder: Path, info: DistInfo) -> None:
    """Fail on every process, with the reason, unless all of them see ``folder`` as one folder.

    The experiment folder must be shared by every node (NFS, Lustre, ...): rank 0 alone writes
    checkpoints that every rank reads on resume, and the feature store keeps each rank's rows
    in files that all ranks read. Rank 0 writes a file there; every rank looks for it."""
    if not info.enabled:
        return
    token = broadcast(f".shared-{os.getpid()}-{time.time_ns()}" if info.is_main else None, info)
    if info.is_main:
        (folder / token).touch()
    dist.barrier()
    seen = all_gather(((folder / token).is_file(), socket.gethostname()), info)
    dist.barrier()
    if info.is_main:
        (folder / token).unlink()
    blind = [f"rank {r} on {host}" for r, (ok, host) in enumerate(seen) if not ok]
    if blind:
        raise CtcasrError(
            f"{folder}: {', '.join(blind)} cannot see the files rank 0 (on {seen[0][1]}) writes "
            "there: the experiment folder must be on a filesystem every node mounts at the "
            "same path (NFS, Lustre, ...)")


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t)
    return t
