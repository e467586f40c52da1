"""Duration-bucketed batching under a padded-frames budget.

Utterances are sorted by length and cut into batches so that ``batch size x longest`` stays under
``max_frames`` (the number of frames the encoder sees, padding included). For training, lengths
are jittered by ``sort_noise`` before sorting (so batches differ between epochs) and the batch
order is shuffled; for evaluation the order is fixed. During the first ``sortagrad_epochs``
epochs training batches come shortest first (SortaGrad, Deep Speech 2: short utterances first
get CTC off its all-blank plateau sooner). Every epoch's batches are a pure function of
``(seed, epoch)``, which is what lets training resume mid-epoch exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


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
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate over ``epoch``'s batches, skipping the first ``start`` (already trained)."""
        self.epoch, self.start = epoch, start

    def batches(self, epoch: int) -> list[list[int]]:
        lengths = self.frames
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        shuffle = self.shuffle and epoch >= self.sortagrad_epochs
        if shuffle and self.sort_noise > 0:
            u = torch.rand(len(lengths), generator=gen, dtype=torch.float64)
            noise = 1 + self.sort_noise * (2 * u - 1)
            lengths = lengths * noise
        order = torch.argsort(lengths, stable=True).tolist()
        batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:  # ascending: the newcomer is the longest of its batch
            if cur and (
                (len(cur) + 1) * self.frames[i] > self.max_frames or len(cur) >= self.max_utts
            ):
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        if shuffle:
            perm = torch.randperm(len(batches), generator=gen).tolist()
            batches = [batches[p] for p in perm]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)[self.start :]

    def __len__(self) -> int:
        return len(self.batches(self.epoch)) - self.start
