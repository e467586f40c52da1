import numpy as np
import pytest
import soundfile as sf
import torch

from ctcasr.config import FbankConfig
from ctcasr.data.audio import load_audio
from ctcasr.data.features import CMVNStats, fbank, num_frames
from ctcasr.errors import CtcasrError


def test_stereo_is_averaged_and_rate_is_converted(tmp_path):
    sr = 8000
    left = np.full(sr, 0.5, dtype=np.float32)
    right = np.full(sr, -0.1, dtype=np.float32)
    sf.write(tmp_path / "st.flac", np.stack([left, right], 1), sr)
    w = load_audio(tmp_path / "st.flac", 8000)
    assert w.shape == (sr,) and torch.allclose(w, torch.full((sr,), 0.2), atol=1e-4)
    w16 = load_audio(tmp_path / "st.flac", 16000)
    assert w16.shape == (2 * sr,)
    assert abs(float(w16[1000:-1000].mean()) - 0.2) < 1e-3


def test_segment_reads_only_its_samples(tmp_path):
    x = np.arange(8000, dtype=np.float32) / 8000
    sf.write(tmp_path / "r.wav", x, 8000, subtype="FLOAT")
    w = load_audio(tmp_path / "r.wav", 8000, offset=0.25, duration=0.5)
    assert w.shape == (4000,) and w[0] == pytest.approx(0.25) and w[-1] == pytest.approx(x[5999])


@pytest.mark.parametrize("kind, message", [
    ("missing", "audio file not found"),
    ("corrupt", "cannot decode audio"),
    ("empty", "zero samples"),
    ("nan", "NaN or infinite"),
])
def test_bad_audio_errors_name_the_file(tmp_path, kind, message):
    p = tmp_path / f"{kind}.wav"
    if kind == "corrupt":
        p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    elif kind == "empty":
        sf.write(p, np.zeros(0, dtype=np.float32), 8000)
    elif kind == "nan":
        sf.write(p, np.array([0.1, np.nan, 0.2], dtype=np.float32), 8000, subtype="FLOAT")
    with pytest.raises(CtcasrError) as e:
        load_audio(p, 8000, where="m.jsonl:3")
    assert str(p) in str(e.value) and message in str(e.value) and "m.jsonl:3" in str(e.value)


def test_fbank_frame_count_matches_formula():
    cfg = FbankConfig(sample_rate=8000, num_mel_bins=23)
    for n in (200, 201, 279, 280, 8000, 12345):
        feats = fbank(torch.randn(n) * 0.1, cfg)
        assert feats.shape == (num_frames(n, cfg), 23)


def test_cmvn_stats_equal_direct_mean_and_std():
    chunks = [torch.randn(t, 5) * 3 + 2 for t in (7, 11, 4)]
    stats = CMVNStats.empty(5)
    for c in chunks:
        stats.add(c)
    mean, std = stats.mean_std()
    allf = torch.cat(chunks).double()
    assert torch.allclose(mean.double(), allf.mean(0), atol=1e-5)
    assert torch.allclose(std.double(), allf.std(0, unbiased=False), atol=1e-5)


def test_utterance_cmn_removes_a_fixed_channel_filter():
    # A fixed microphone colouring is (nearly) a constant per-bin offset in log-mel; utterance
    # CMN removes it: the filtered and unfiltered signals give nearly the same features.
    cfg = FbankConfig(sample_rate=8000, num_mel_bins=23, utterance_cmn=True)
    wave = torch.randn(8000) * 0.1 * torch.linspace(0.2, 1.0, 8000)  # noise with a level ramp
    coloured = torch.nn.functional.conv1d(  # a short FIR low-pass: a different "microphone"
        wave.view(1, 1, -1), torch.tensor([[[0.5, 0.3, 0.2]]]), padding=1
    ).view(-1) * 3.0
    plain, same = fbank(wave, cfg), fbank(coloured, cfg)
    assert plain.mean(0).abs().max() < 1e-4  # every bin has zero mean over the utterance
    raw = FbankConfig(sample_rate=8000, num_mel_bins=23)
    assert (fbank(wave, raw) - fbank(coloured, raw)).abs().mean() > 1.0
    assert (plain - same).abs().mean() < 0.2
