"""Per-speaker statistics of an FSDD folder: why one speaker is harder than another.

    python local/speakers.py CORPUS [--every 5]

Prints, per speaker: recordings, mean duration, median F0 (torchaudio's detect_pitch_frequency),
and the average spectrum of the louder half of the frames at a few frequencies, in dB relative
to its peak (a microphone / channel fingerprint).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

NAME = re.compile(r"^(\d)_(.+)_(\d+)\.wav$")
BANDS_HZ = (100, 200, 500, 1000, 2000, 3000, 3500, 3800, 3950)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--every", type=int, default=5, help="use every N-th recording")
    args = ap.parse_args()
    folder = args.corpus / "recordings" if (args.corpus / "recordings").is_dir() else args.corpus
    files = defaultdict(list)
    for p in sorted(folder.glob("*.wav")):
        m = NAME.match(p.name)
        if m:
            files[m.group(2)].append(p)
    print("| speaker | recordings | mean s | median F0 Hz | "
          + " | ".join(f"{b} Hz dB" for b in BANDS_HZ) + " |")
    print("| --- " * (4 + len(BANDS_HZ)) + "|")
    for spk, paths in sorted(files.items()):
        durs, f0s, spectra = [], [], []
        for p in paths[:: args.every]:
            wave, sr = sf.read(p, dtype="float32", always_2d=True)
            wave = wave.mean(1)
            durs.append(len(wave) / sr)
            if len(wave) < 512:
                continue
            f0s.append(AF.detect_pitch_frequency(torch.from_numpy(wave), sr, freq_low=60,
                                                 freq_high=400).median().item())
            frames = np.lib.stride_tricks.sliding_window_view(wave, 256)[::128] * np.hanning(256)
            power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
            energy = power.sum(1)
            spectra.append(power[energy >= np.median(energy)].mean(0))
        db = 10 * np.log10(np.mean(spectra, 0) + 1e-12)
        db -= db.max()
        bins = [db[min(len(db) - 1, round(b * 256 / sr))] for b in BANDS_HZ]
        print(f"| {spk} | {len(paths)} | {np.mean(durs):.2f} | {np.median(f0s):.0f} | "
              + " | ".join(f"{x:.1f}" for x in bins) + " |")


if __name__ == "__main__":
    main()
