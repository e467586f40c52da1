"""Dataset and collate: utterances -> typed, padded batches with lengths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

from ctcasr.config import FbankConfig
from ctcasr.data.audio import load_audio
from ctcasr.data.augment import Augmenter
from ctcasr.data.features import fbank
from ctcasr.data.manifest import Utterance
from ctcasr.errors import CtcasrError
from ctcasr.tokenizer import Tokenizer


@dataclass
class Batch:
    """A padded batch. ``feats[b, feat_lens[b]:]`` and ``tokens[b, token_lens[b]:]`` are padding."""

    feats: torch.Tensor  # [B, T, F] float32
    feat_lens: torch.Tensor  # [B] int64
    tokens: torch.Tensor  # [B, U] int64, padded with 0
    token_lens: torch.Tensor  # [B] int64
    ids: list[str]
    indices: list[int]  # positions in the dataset (manifest order)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            self.feats.to(device, non_blocking=non_blocking),
            self.feat_lens.to(device, non_blocking=non_blocking),
            self.tokens.to(device, non_blocking=non_blocking),
            self.token_lens.to(device, non_blocking=non_blocking),
            self.ids,
            self.indices,
        )

    def pin_memory(self) -> Batch:
        return Batch(
            self.feats.pin_memory(), self.feat_lens.pin_memory(), self.tokens.pin_memory(),
            self.token_lens.pin_memory(), self.ids, self.indices,
        )

    def __len__(self) -> int:
        return len(self.ids)


class ASRDataset(torch.utils.data.Dataset):
    """Item ``i`` is ``(i, fbank [T, F], token ids [U])``.

    With an ``augmenter``, the key ``(epoch, i)`` gives utterance ``i`` augmented as drawn for
    ``epoch`` (speed perturbation, SpecAugment); a plain ``i`` is never augmented.
    Transcripts are tokenised up front, so an unencodable character fails before any training
    with the manifest line. Without a tokenizer (decoding), token tensors are empty.
    """

    def __init__(
        self,
        utts: Sequence[Utterance],
        feat_cfg: FbankConfig,
        tokenizer: Tokenizer | None = None,
        cache_features: bool = False,
        augmenter: Augmenter | None = None,
    ) -> None:
        self.utts = list(utts)
        self.feat_cfg = feat_cfg
        self.augmenter = augmenter
        # keyed by (index, speed factor, warp factor)
        self.cache: dict[tuple[int, float, float], torch.Tensor] | None = (
            {} if cache_features else None
        )
        self.tokens: list[torch.Tensor] = []
        for u in self.utts:
            ids: list[int] = []
            if tokenizer is not None and u.text:
                try:
                    ids = tokenizer.encode(u.text)
                except ValueError as e:
                    raise CtcasrError(f"{u.where}: utterance {u.id!r}: {e}") from None
            self.tokens.append(torch.tensor(ids, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.utts)

    def features(self, i: int, speed: float = 1.0, warp: float = 1.0) -> torch.Tensor:
        if self.cache is not None and (i, speed, warp) in self.cache:
            return self.cache[i, speed, warp]
        u = self.utts[i]
        wave = load_audio(u.audio, self.feat_cfg.sample_rate, u.where, u.offset, u.duration)
        if speed != 1.0 and self.augmenter is not None:
            wave = self.augmenter.perturb_speed(wave, speed)
        feats = fbank(wave, self.feat_cfg, warp) if wave.numel() else torch.empty(0)
        if feats.shape[0] == 0:
            raise CtcasrError(
                f"{u.audio}: audio too short for one {self.feat_cfg.frame_length_ms:g} ms frame "
                f"(manifest {u.where})"
            )
        if self.cache is not None:
            self.cache[i, speed, warp] = feats
        return feats

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[int, torch.Tensor, torch.Tensor]:
        if isinstance(key, tuple) and self.augmenter is not None:
            epoch, i = key
            aug = self.augmenter
            feats = self.features(i, aug.speed(epoch, i), aug.warp(epoch, i))
            feats = aug.spec_augment(feats, epoch, i)
            return i, feats, self.tokens[i]
        i = key[1] if isinstance(key, tuple) else key
        return i, self.features(i), self.tokens[i]

    def collate(self, items: list[tuple[int, torch.Tensor, torch.Tensor]]) -> Batch:
        indices = [i for i, _, _ in items]
        feats = [f for _, f, _ in items]
        toks = [t for _, _, t in items]
        return Batch(
            feats=pad_sequence(feats, batch_first=True),
            feat_lens=torch.tensor([f.shape[0] for f in feats], dtype=torch.long),
            tokens=pad_sequence(toks, batch_first=True) if any(len(t) for t in toks)
            else torch.zeros(len(toks), 0, dtype=torch.long),
            token_lens=torch.tensor([len(t) for t in toks], dtype=torch.long),
            ids=[self.utts[i].id for i in indices],
            indices=indices,
        )


def make_loader(
    dataset: ASRDataset, sampler, num_workers: int, pin_memory: bool = False
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``sampler``'s batches. It gets its own generator: a DataLoader draws
    from the global RNG each time an epoch starts, which would make a resumed run diverge."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=dataset.collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
