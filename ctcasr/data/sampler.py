"""Duration-bucketed batching under a padded-frames budget.

Utterances are sorted by length and cut into batches so that ``batch size x longest`` stays under
``max_frames`` (the number of frames the encoder sees, padding included): a promise that users size
memory by, kept for every batch of two or more utterances. An utterance longer than ``max_frames``
on its own makes a batch of one (logged once when the sampler is built). For training, lengths are
jittered by ``sort_noise`` before sorting (so batches differ between epochs; the budget is checked
against the true lengths, so a batch's longest member need not be its last) and the batch order is
shuffled; for evaluation the order is fixed. During the first ``sortagrad_epochs`` epochs training
batches come shortest first (SortaGrad, Deep Speech 2: short utterances first get CTC off its
all-blank plateau sooner). Every epoch's batches are a pure function of ``(seed, epoch)``, which is
what lets training resume mid-epoch exactly.

Distributed training: every process computes the same global list of batches and takes every
``world_size``-th one (``rank``, ``rank + world_size``, ...). For training the list is cut to a
multiple of ``world_size`` (dropping at most ``world_size - 1`` batches of the epoch, different ones
each epoch) so that all processes take the same number of steps. ``max_frames`` is per process.
With ``tag_epoch`` the sampler yields ``(epoch, index)`` keys, which tell the dataset which
epoch's augmentation to draw. With ``pad_to`` > 1 the loader pads each batch's time axis up to a
multiple of it (``data.pad_to_multiple_of``) and the budget counts the longest member rounded up
the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch

log = logging.getLogger(__name__)


class BucketBatchSampler:
    def __init__(
        self,
        frames: Sequence[int],
        max_frames: int,
        max_utts: int = 256,
        shuffle: bool = False,
        seed: int = 0,
        sort_noise: float = 0.0,
        sortagrad_epochs: int = 0,
        rank: int = 0,
        world_size: int = 1,
        tag_epoch: bool = False,
        pad_to: int = 1,
    ) -> None:
        if max_frames <= 0 or max_utts <= 0:
            raise ValueError("max_frames and max_utts must be positive")
        self.frames = torch.as_tensor(list(frames), dtype=torch.float64)
        self.max_frames = max_frames
        self.max_utts = max_utts
        self.shuffle = shuffle
        self.seed = seed
        self.sort_noise = sort_noise
        self.sortagrad_epochs = sortagrad_epochs
        self.rank, self.world_size = rank, world_size
        self.tag_epoch = tag_epoch
        self.pad_to = pad_to
        self.epoch = 0
        self.start = 0
        over = int((self.frames > max_frames).sum())
        if over:
            log.warning("%d utterance(s) longer than max_frames_per_batch (%d frames, the longest "
                        "%d) go in batches of their own", over, max_frames, int(self.frames.max()))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate over ``epoch``'s batches, skipping the first ``start`` of the global list
        (already trained; a multiple of ``world_size``)."""
        self.epoch, self.start = epoch, start

    def batches(self, epoch: int) -> list[list[int]]:
        """The global list of batches of ``epoch`` (all processes)."""
        lengths = self.frames
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        shuffle = self.shuffle and epoch >= self.sortagrad_epochs
        if shuffle and self.sort_noise > 0:
            u = torch.rand(len(lengths), generator=gen, dtype=torch.float64)
            noise = 1 + self.sort_noise * (2 * u - 1)
            lengths = lengths * noise
        order = torch.argsort(lengths, stable=True).tolist()
        frames = self.frames.tolist()
        m = self.pad_to
        batches: list[list[int]] = []
        cur: list[int] = []
        longest = 0.0  # of cur, in true frames (with sort_noise the newcomer may be shorter)
        for i in order:
            n = frames[i]
            if cur and (
                (len(cur) + 1) * -(-max(longest, n) // m) * m > self.max_frames
                or len(cur) >= self.max_utts
            ):
                batches.append(cur)
                cur, longest = [], 0.0
            cur.append(i)
            longest = max(longest, n)
        if cur:
            batches.append(cur)
        if shuffle:
            perm = torch.randperm(len(batches), generator=gen).tolist()
            batches = [batches[p] for p in perm]
        if self.shuffle and self.world_size > 1:
            batches = batches[: len(batches) - len(batches) % self.world_size]
        return batches

    def _mine(self) -> list[list[int]]:
        return self.batches(self.epoch)[self.start :][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int] | list[tuple[int, int]]]:
        for b in self._mine():
            yield [(self.epoch, i) for i in b] if self.tag_epoch else b

    def __len__(self) -> int:
        return len(self._mine())
