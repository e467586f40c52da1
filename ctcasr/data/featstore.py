"""Features on disk: written once before training, read back with ``pread`` for every batch.

Caching fbank in a Python dict makes training memory grow with the corpus (100 h at 80 bins and
three speed factors is ~35 GB), once per DataLoader worker. A :class:`FeatureStore` keeps the
features in flat float32 files instead, as Kaldi's ark/scp and Lhotse's feature shards do:

- ``data.R.f32``: the rows written by process ``R`` (one per DDP rank), back to back;
- ``index.R.npy``: int64 ``[utterances, variants, 2]`` = (offset in floats, frames), -1 where
  process ``R`` did not write that row;
- ``meta.json``: what the store holds (a fingerprint of the utterances, feature settings and
  variants) and whether it is complete, so a resumed run reuses it and a changed one rebuilds it.

Reads are ``os.pread`` into a fresh tensor: the page cache keeps hot files fast, but it is not
the process's memory, so resident memory does not grow with the number of utterances (a
memory map would: its touched pages count as resident). Each process opens its own file
descriptors, so DataLoader workers (forked or spawned) read safely.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ctcasr.data.manifest import Utterance


def fingerprint(utts: Sequence[Utterance], settings: str) -> str:
    h = hashlib.sha1(settings.encode())
    for u in utts:
        h.update(f"\n{u.id}\t{u.audio}\t{u.offset}\t{u.duration}".encode())
    return h.hexdigest()


class FeatureStore:
    """Rows ``(utterance, variant)`` of ``dim``-bin features in ``folder`` (see module doc)."""

    def __init__(self, folder: Path, num_utts: int, num_variants: int, dim: int,
                 key: str) -> None:
        self.folder, self.dim, self.key = Path(folder), dim, key
        self.index = np.full((num_utts, num_variants, 2), -1, dtype=np.int64)
        self.files: list[str] = []  # data file of each writer, by the number in index
        self.owner = np.full(num_utts, -1, dtype=np.int16)  # which data file holds a row
        self._fds: dict[int, int] = {}
        self._pid = -1

    # -- writing (before training; one writer per DDP rank) --------------------------------

    def open_writer(self, rank: int) -> _Writer:
        self.folder.mkdir(parents=True, exist_ok=True)
        return _Writer(self, rank)

    def mark_complete(self, world_size: int) -> None:
        (self.folder / "meta.json").write_text(json.dumps(
            {"key": self.key, "world_size": world_size, "dim": self.dim,
             "shape": list(self.index.shape)}))

    def load(self) -> bool:
        """Read the indexes of a complete store with this key; False if there is none."""
        try:
            meta = json.loads((self.folder / "meta.json").read_text())
        except (OSError, ValueError):
            return False
        if meta.get("key") != self.key or meta.get("shape") != list(self.index.shape):
            return False
        for r in range(meta["world_size"]):
            part = np.load(self.folder / f"index.{r}.npy")
            rows = part[:, 0, 1] >= 0
            self.index[rows], self.owner[rows] = part[rows], r
        self.files = [str(self.folder / f"data.{r}.f32") for r in range(meta["world_size"])]
        return bool((self.index[:, :, 1] >= 0).all())

    def nbytes(self) -> int:
        return int(self.index[:, :, 1].clip(min=0).sum()) * self.dim * 4

    # -- reading -----------------------------------------------------------------------------

    def read(self, i: int, variant: int) -> torch.Tensor:
        offset, frames = (int(v) for v in self.index[i, variant])
        if self._pid != os.getpid():  # a new process (a DataLoader worker): its own descriptors
            self._fds, self._pid = {}, os.getpid()
        owner = int(self.owner[i])
        if owner not in self._fds:
            self._fds[owner] = os.open(self.files[owner], os.O_RDONLY)
        n = frames * self.dim * 4
        buf = bytearray(n)
        got = os.preadv(self._fds[owner], [buf], offset * 4)
        if got != n:
            raise OSError(f"{self.files[owner]}: truncated feature store (row {i}); delete "
                          f"{self.folder} and run again")
        return torch.frombuffer(buf, dtype=torch.float32).view(frames, self.dim)

    def subset(self, keep: Sequence[int]) -> FeatureStore:
        new = FeatureStore(self.folder, 0, self.index.shape[1], self.dim, self.key)
        new.index, new.owner, new.files = self.index[keep], self.owner[keep], self.files
        return new

    def __getstate__(self) -> dict:  # descriptors stay in the process that opened them
        return {**self.__dict__, "_fds": {}, "_pid": -1}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class _Writer:
    def __init__(self, store: FeatureStore, rank: int) -> None:
        self.store, self.rank = store, rank
        self.path = store.folder / f"data.{rank}.f32"
        self.file = open(self.path, "wb")  # noqa: SIM115 (closed in close())
        self.offset = 0
        self.index = np.full(store.index.shape, -1, dtype=np.int64)

    def write(self, i: int, variants: Sequence[torch.Tensor]) -> None:
        """Row ``i``'s features, one tensor per variant (none: a bad row, never read)."""
        if not variants:
            self.index[i] = 0
        for v, feats in enumerate(variants):
            data = feats.contiguous().to(torch.float32).numpy()
            self.file.write(data.tobytes())
            self.index[i, v] = (self.offset, data.shape[0])
            self.offset += data.size

    def close(self) -> None:
        self.file.close()
        np.save(self.store.folder / f"index.{self.rank}.npy", self.index)
