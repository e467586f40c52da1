"""Dataset and collate: utterances -> typed, padded batches with lengths.

Bad inputs (see :mod:`ctcasr.data.badinputs`): a transcript the tokenizer cannot encode is met
when the dataset is made; unreadable audio, and audio too short for its transcript under CTC
(with the model's ``output_lengths``), when an utterance is read. Under ``--skip-bad`` such an
item comes back as ``(i, None, message)``, even from a DataLoader worker process, and ``collate``
leaves it out of the batch and passes the message on in ``Batch.skipped``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pad_sequence

from ctcasr.config import FbankConfig
from ctcasr.data.audio import load_audio
from ctcasr.data.augment import Augmenter
from ctcasr.data.badinputs import BadInputs
from ctcasr.data.featstore import FeatureStore
from ctcasr.data.features import fbank
from ctcasr.data.manifest import Utterance
from ctcasr.errors import CtcasrError
from ctcasr.models.ctc import min_ctc_frames
from ctcasr.tokenizer import Tokenizer

# (i, feats [T, F] or [views, T, F], tokens | why)
Item = tuple[int, torch.Tensor, torch.Tensor] | tuple[int, None, str]
# (i, fbank of each speed factor, None) | (i, None, why)
Variants = tuple[int, list[torch.Tensor], None] | tuple[int, None, str]


@dataclass
class Batch:
    """A padded batch. ``feats[b, feat_lens[b]:]`` and ``tokens[b, token_lens[b]:]`` are padding.
    With ``views`` > 1 (CR-CTC) ``feats`` holds each utterance that many times, differently
    masked: rows ``v * B + b`` are view ``v`` of utterance ``b``; the rest is per utterance."""

    feats: torch.Tensor  # [views * B, T, F] float32
    feat_lens: torch.Tensor  # [views * B] int64
    tokens: torch.Tensor  # [B, U] int64, padded with 0
    token_lens: torch.Tensor  # [B] int64
    ids: list[str]
    indices: list[int]  # positions in the dataset (manifest order)
    skipped: list[str] = field(default_factory=list)  # --skip-bad: why items were left out
    views: int = 1

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            self.feats.to(device, non_blocking=non_blocking),
            self.feat_lens.to(device, non_blocking=non_blocking),
            self.tokens.to(device, non_blocking=non_blocking),
            self.token_lens.to(device, non_blocking=non_blocking),
            self.ids,
            self.indices,
            self.skipped,
            self.views,
        )

    def pin_memory(self) -> Batch:
        return Batch(
            self.feats.pin_memory(), self.feat_lens.pin_memory(), self.tokens.pin_memory(),
            self.token_lens.pin_memory(), self.ids, self.indices, self.skipped, self.views,
        )

    def __len__(self) -> int:
        return len(self.ids)


class ASRDataset(torch.utils.data.Dataset):
    """Item ``i`` is ``(i, fbank [T, F], token ids [U])``.

    With an ``augmenter``, the key ``(epoch, i)`` gives utterance ``i`` augmented as drawn for
    ``epoch`` (speed perturbation, VTLP, noise, SpecAugment; ``[views, T, F]`` when the
    augmenter makes several views); a plain ``i`` is never augmented.
    Features come from a :class:`FeatureStore` on disk once one is attached (:meth:`use_store`,
    unaugmented and speed-perturbed), from an in-memory cache (``cache_features``: grows with
    the corpus), or are computed each time.
    Transcripts are tokenised up front, so an unencodable character fails before any training
    with the manifest line. Without a tokenizer (decoding), token tensors are empty. With
    ``output_lengths`` (the model's frames-out-for-frames-in), unperturbed audio that gives
    fewer encoder frames than CTC needs for the transcript (at least one) is an error. With a
    skipping ``bad``, bad utterances are left out (see the module docstring).
    """

    def __init__(
        self,
        utts: Sequence[Utterance],
        feat_cfg: FbankConfig,
        tokenizer: Tokenizer | None = None,
        cache_features: bool = False,
        augmenter: Augmenter | None = None,
        output_lengths: Callable[[torch.Tensor], torch.Tensor] | None = None,
        bad: BadInputs | None = None,
    ) -> None:
        self.feat_cfg = feat_cfg
        self.augmenter = augmenter
        self.output_lengths = output_lengths
        self.min_frames: dict[int, int] = {}  # encoder frames needed -> feature frames needed
        self.skip_bad = bad is not None and bad.skip
        self.store: FeatureStore | None = None
        self.store_speeds: list[float] = []  # the speed factor of each variant in the store
        # keyed by (index, speed factor, warp factor)
        self.cache: dict[tuple[int, float, float], torch.Tensor] | None = (
            {} if cache_features else None
        )
        self.utts: list[Utterance] = []
        self.tokens: list[torch.Tensor] = []
        for u in utts:
            ids: list[int] = []
            if tokenizer is not None and u.text:
                try:
                    ids = tokenizer.encode(u.text)
                except ValueError as e:
                    (bad or BadInputs()).skip_or_raise(f"{u.where}: utterance {u.id!r}: {e}")
                    continue
            self.utts.append(u)
            self.tokens.append(torch.tensor(ids, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.utts)

    def subset(self, keep: Iterable[int]) -> ASRDataset:
        """The utterances ``keep`` (new indices 0, 1, ...; cached features kept); reading is
        strict: a bad utterance raises."""
        keep = list(keep)
        new = ASRDataset([], self.feat_cfg, None, False, self.augmenter, self.output_lengths)
        new.min_frames = self.min_frames
        if self.store is not None:
            new.store, new.store_speeds = self.store.subset(keep), self.store_speeds
        new.utts = [self.utts[i] for i in keep]
        new.tokens = [self.tokens[i] for i in keep]
        if self.cache is not None:
            pos = {i: j for j, i in enumerate(keep)}
            new.cache = {(pos[i], s, w): f for (i, s, w), f in self.cache.items() if i in pos}
        return new

    def features(
        self, i: int, speed: float = 1.0, warp: float = 1.0, noise: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Log-mel of utterance ``i``: sped up, VTLP-warped, and with the noise drawn for
        ``noise = (epoch, i)`` (noisy features are never cached)."""
        if self.store is not None and noise is None and warp == 1.0 \
                and speed in self.store_speeds:
            return self.store.read(i, self.store_speeds.index(speed))
        cached = self.cache is not None and noise is None
        if cached and (i, speed, warp) in self.cache:
            return self.cache[i, speed, warp]
        u = self.utts[i]
        wave = load_audio(u.audio, self.feat_cfg.sample_rate, u.where, u.offset, u.duration)
        if speed != 1.0 and self.augmenter is not None:
            wave = self.augmenter.perturb_speed(wave, speed)
        if noise is not None and self.augmenter is not None:
            wave = self.augmenter.add_noise(wave, *noise)
        feats = fbank(wave, self.feat_cfg, warp) if wave.numel() else torch.empty(0)
        if feats.shape[0] == 0:
            raise CtcasrError(
                f"{u.audio}: audio too short for one {self.feat_cfg.frame_length_ms:g} ms frame "
                f"(manifest {u.where})"
            )
        if speed == 1.0:
            self._check_ctc_length(i, feats.shape[0])
        if cached:
            self.cache[i, speed, warp] = feats
        return feats

    def use_store(self, store: FeatureStore, speeds: list[float]) -> None:
        """Read features of speed factors ``speeds`` (warp 1, no noise) from ``store``."""
        self.store, self.store_speeds, self.cache = store, speeds, None

    def variants(self, i: int, speeds: Sequence[float]) -> Variants:
        """``(i, [fbank at each speed factor], None)``, or ``(i, None, why)`` for a bad
        utterance under ``--skip-bad``."""
        try:
            return i, [self.features(i, s) for s in speeds], None
        except CtcasrError as e:
            if not self.skip_bad:
                raise
            return i, None, str(e)

    def _check_ctc_length(self, i: int, frames: int) -> None:
        if self.output_lengths is None:
            return
        u, tokens = self.utts[i], self.tokens[i]
        need = int(min_ctc_frames(tokens[None], torch.tensor([len(tokens)]))) if len(tokens) \
            else 1
        if need not in self.min_frames:  # the front end shortens time by at most 8
            out = self.output_lengths(torch.arange(16 * need + 16))
            self.min_frames[need] = int(torch.searchsorted(out, need))
        if frames < self.min_frames[need]:
            out = int(self.output_lengths(torch.tensor(frames)))
            what = f"CTC needs {need} for its {len(tokens)} labels" if len(tokens) else \
                "decoding needs 1"
            raise CtcasrError(f"{u.audio}: too short: {frames} feature frames give {out} encoder "
                              f"frame(s), {what} (manifest {u.where})")

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
        i = key[1] if isinstance(key, tuple) else key
        try:
            if isinstance(key, tuple) and self.augmenter is not None:
                aug, epoch = self.augmenter, key[0]
                noise = (epoch, i) if aug.noisy(epoch, i) else None
                feats = self.features(i, aug.speed(epoch, i), aug.warp(epoch, i), noise)
                return i, aug.spec_augment(feats, epoch, i), self.tokens[i]
            return i, self.features(i), self.tokens[i]
        except CtcasrError as e:
            if not self.skip_bad:
                raise
            return i, None, str(e)

    def collate(self, items: list[Item], pad_to: int = 1) -> Batch:
        """A :class:`Batch`; its time axis padded up to a multiple of ``pad_to`` frames."""
        skipped = [why for _, f, why in items if f is None]
        items = [it for it in items if it[1] is not None]
        indices = [i for i, _, _ in items]
        feats = [f for _, f, _ in items]
        views = feats[0].shape[0] if feats and feats[0].dim() == 3 else 1
        if views > 1:  # view-major: all first copies, then all second copies
            feats = [f[v] for v in range(views) for f in feats]
        toks = [t for _, _, t in items]
        padded = pad_sequence(feats, batch_first=True) if feats \
            else torch.zeros(0, 0, self.feat_cfg.num_mel_bins)
        if padded.shape[1] % pad_to:
            padded = torch.nn.functional.pad(padded, (0, 0, 0, pad_to - padded.shape[1] % pad_to))
        return Batch(
            feats=padded,
            feat_lens=torch.tensor([f.shape[0] for f in feats], dtype=torch.long),
            tokens=pad_sequence(toks, batch_first=True) if any(len(t) for t in toks)
            else torch.zeros(len(toks), 0, dtype=torch.long),
            token_lens=torch.tensor([len(t) for t in toks], dtype=torch.long),
            ids=[self.utts[i].id for i in indices],
            indices=indices,
            skipped=skipped,
            views=views,
        )


class _VariantsOf(torch.utils.data.Dataset):
    def __init__(self, dataset: ASRDataset, indices: Sequence[int], speeds: Sequence[float]):
        self.dataset, self.indices, self.speeds = dataset, indices, speeds

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Variants:
        return self.dataset.variants(self.indices[k], self.speeds)


def read_each(dataset: ASRDataset, indices: Sequence[int], num_workers: int,
              speeds: Sequence[float] = (1.0,)) -> Iterable[Variants]:
    """``dataset.variants(i, speeds)`` for each of ``indices``, in order (in worker processes
    if ``num_workers``)."""
    if num_workers == 0:
        return (dataset.variants(i, speeds) for i in indices)
    return torch.utils.data.DataLoader(_VariantsOf(dataset, indices, speeds), batch_size=None,
                                       num_workers=num_workers)


def make_loader(
    dataset: ASRDataset, sampler, num_workers: int, pin_memory: bool = False, pad_to: int = 1
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``sampler``'s batches (time padded to a multiple of ``pad_to``
    frames). It gets its own generator: a DataLoader draws from the global RNG each time an
    epoch starts, which would make a resumed run diverge."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=functools.partial(dataset.collate, pad_to=pad_to),
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
