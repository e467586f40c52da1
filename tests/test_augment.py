import numpy as np
import pytest
import soundfile as sf
import torch

from ctcasr.config import AugmentConfig, FbankConfig
from ctcasr.data.augment import Augmenter
from ctcasr.data.dataset import ASRDataset
from ctcasr.data.features import num_frames
from ctcasr.data.manifest import Utterance
from ctcasr.errors import CtcasrError

FEAT = FbankConfig(sample_rate=8000, num_mel_bins=23)


def dataset(tmp_path, aug: AugmentConfig, cache=True):
    t = np.arange(8000) / 8000
    sf.write(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000)
    utts = [Utterance(f"u{i}", str(tmp_path / "a.wav"), 1.0, "x") for i in range(4)]
    return ASRDataset(utts, FEAT, cache_features=cache, augmenter=Augmenter(aug, 8000, seed=5))


def test_speed_perturbation_changes_length_and_is_a_function_of_epoch_and_index(tmp_path):
    ds = dataset(tmp_path, AugmentConfig(speeds=[0.9, 1.0, 1.1]))
    plain = ds[0][1]
    assert plain.shape[0] == num_frames(8000, FEAT)
    seen = {}
    for epoch in range(6):
        for i in range(4):
            speed = ds.augmenter.speed(epoch, i)
            feats = ds[(epoch, i)][1]
            expect = num_frames(round(8000 / speed), FEAT)
            assert abs(feats.shape[0] - expect) <= 1, (speed, feats.shape)
            seen[speed] = feats
            assert torch.equal(feats, ds[(epoch, i)][1])  # the same draw again
    assert set(seen) == {0.9, 1.0, 1.1}
    assert torch.equal(seen[1.0], plain)
    assert torch.equal(ds[0][1], plain)  # a plain index is never augmented


def test_spec_augment_masks_bins_and_frames_deterministically(tmp_path):
    cfg = AugmentConfig(freq_masks=2, freq_mask_width=5, time_masks=2, time_mask_width=10)
    ds = dataset(tmp_path, cfg)
    plain = ds[1][1]
    a, b, c = ds[(0, 1)][1], ds[(0, 1)][1], ds[(1, 1)][1]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == plain.shape
    masked = a == 0
    assert masked.any() and torch.equal(a[~masked], plain[~masked])
    full_cols = masked.all(0).sum().item()  # masked mel bins
    full_rows = masked.all(1).sum().item()  # masked frames
    assert 0 < full_cols <= 10 and 0 < full_rows <= 20
    assert torch.equal(ds[1][1], plain)  # the cache keeps the clean features


def test_vtlp_moves_a_tone_along_the_mel_axis(tmp_path):
    # A 440 Hz tone peaks in one mel bin; Kaldi's VTLN maps frequency f to about alpha * f
    # before the filterbank, so alpha > 1 moves the peak to a higher bin and alpha < 1 lower.
    ds = dataset(tmp_path, AugmentConfig(warps=[0.85, 1.0, 1.15]))
    peak = {}
    for epoch in range(8):
        warp = ds.augmenter.warp(epoch, 2)
        feats = ds[(epoch, 2)][1]
        assert feats.shape == ds[2][1].shape and torch.equal(feats, ds[(epoch, 2)][1])
        peak[warp] = int(feats.mean(0).argmax())
    assert set(peak) == {0.85, 1.0, 1.15}
    assert peak[1.0] == int(ds[2][1].mean(0).argmax())
    assert peak[0.85] < peak[1.0] < peak[1.15]


def test_noise_has_the_drawn_snr_and_is_deterministic(tmp_path):
    cfg = AugmentConfig(noise_prob=0.5, noise_snr=[10.0, 20.0])
    ds = dataset(tmp_path, cfg)
    aug, plain = ds.augmenter, ds[3][1]
    draws = [aug.noisy(epoch, 3) for epoch in range(40)]
    assert 10 < sum(draws) < 30  # about half of the epochs
    wave = torch.sin(torch.arange(8000) * 0.3) * 0.3
    for epoch in range(5):
        noisy = aug.add_noise(wave, epoch, 3)
        assert torch.equal(noisy, aug.add_noise(wave, epoch, 3))
        snr = 10 * torch.log10(wave.pow(2).mean() / (noisy - wave).pow(2).mean())
        assert 9.8 < snr < 20.2
    for epoch, noisy in enumerate(draws[:6]):
        feats = ds[(epoch, 3)][1]
        assert torch.equal(feats, ds[(epoch, 3)][1]) and feats.shape == plain.shape
        assert torch.equal(feats, plain) != noisy
    assert torch.equal(ds[3][1], plain)  # noisy features never enter the cache


def test_bad_factors_are_rejected():
    with pytest.raises(CtcasrError, match="data.augment.speeds"):
        AugmentConfig(speeds=[0.0])
    with pytest.raises(CtcasrError, match="data.augment.warps"):
        AugmentConfig(warps=[1.5])
    with pytest.raises(CtcasrError, match="noise_snr"):
        AugmentConfig(noise_snr=[30.0, 10.0])
    assert not AugmentConfig().enabled and AugmentConfig(time_masks=1).enabled
    assert AugmentConfig(warps=[0.9, 1.1]).enabled


def test_spec_augment_can_start_at_a_later_epoch(tmp_path):
    # epoch 3 as the logs count it: the dataset's epochs 0 and 1 are plain, 2 is masked
    ds = dataset(tmp_path, AugmentConfig(time_masks=2, time_mask_width=10, spec_start_epoch=3))
    plain = ds[1][1]
    assert torch.equal(ds[(0, 1)][1], plain) and torch.equal(ds[(1, 1)][1], plain)
    assert not torch.equal(ds[(2, 1)][1], plain)
