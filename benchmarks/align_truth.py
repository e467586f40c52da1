"""Forced alignment against known word boundaries, and an hour of audio in one pass.

    .venv/bin/python benchmarks/align_truth.py --checkpoint MODEL [--fsdd DIR] [--speaker george]
        [--utts 100] [--hour 1.0] [--find] [--snr DB] [--gaps 0.1 0.5]

Truth: FSDD recordings (one spoken digit each, trimmed to the word) joined into strings of 3-8
digits with 0.1-0.5 s of low noise between them, so every word's start and end is known to the
sample (``--snr``: white noise over each string; ``--gaps``: the pauses' range). Each string is
aligned with its transcript (``ctcasr.decode.align``); the table gives the mean, median and
90th-percentile error of word starts and ends, in ms, of the model's spans and of the same
words snapped to the audio's pauses (``ctcasr.decode.pauses``, what ``ctcasr align`` gives).
Then about ``--hour`` hours of such strings as ONE file, aligned with its whole transcript: the
time, the real-time factor and the process's peak RSS (VmHWM).

``--find``: each string's transcript made wrong twice over, one spoken word left out of it and
one word that is not spoken put in at a random place, then aligned with ``find``: how many of
the put-in words it reports missing, how many right words it leaves out, how many left-out
spoken words fall in an unmatched stretch, and the boundary errors of the words it found.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import ctcasr
from ctcasr.data.audio import to_mono
from ctcasr.decode.align import Find, align, find
from ctcasr.decode.pauses import frame_db, snap
from ctcasr.infer.transcriber import Source

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPANS, SNAPPED = "the model's spans", "snapped to pauses"
NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")


def recordings(fsdd: Path, speaker: str, sr: int) -> list[tuple[str, np.ndarray]]:
    out = []
    for p in sorted(fsdd.rglob("*.wav")):
        m = NAME.match(p.name)
        if m and m.group(2) == speaker:
            data, rate = sf.read(p, dtype="float32", always_2d=True)
            out.append((WORDS[int(m.group(1))], to_mono(data, rate, sr).numpy()))
    return out


def string(recs, rng: random.Random, sr: int, n: int, gaps=(0.1, 0.5), snr: float | None = None):
    """(wave, words, [(start s, end s)]); ``snr``: white noise over the whole string, this many
    dB under the words' mean power"""
    parts, words, spans, t = [], [], [], 0
    gen = np.random.default_rng(rng.getrandbits(32))
    for k in range(n):
        gap = (0.25 if k == 0 else rng.uniform(*gaps))
        pause = (1e-3 * gen.standard_normal(int(gap * sr))).astype(np.float32)
        word, wave = rng.choice(recs)
        parts += [pause, wave]
        t += len(pause)
        spans.append((t / sr, (t + len(wave)) / sr))
        t += len(wave)
        words.append(word)
    parts.append((1e-3 * gen.standard_normal(int(0.25 * sr))).astype(np.float32))
    wave = np.concatenate(parts)
    if snr is not None:
        power = np.mean(np.concatenate(parts[1::2]) ** 2)
        wave += (np.sqrt(power / 10 ** (snr / 10)) * gen.standard_normal(len(wave))
                 ).astype(np.float32)
    return wave, words, spans


def peak_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmHWM")) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--fsdd", type=Path, default=Path(os.environ.get("CTCASR_DATA", ".")) / "fsdd")
    ap.add_argument("--speaker", default="george")
    ap.add_argument("--utts", type=int, default=100)
    ap.add_argument("--hour", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--find", action="store_true")
    ap.add_argument("--gaps", type=float, nargs=2, default=[0.1, 0.5],
                    help="the pause between two words is drawn from this range (s)")
    ap.add_argument("--snr", type=float, help="white noise over each string at this SNR (dB)")
    args = ap.parse_args()
    asr = ctcasr.load(args.checkpoint, threads=args.threads, timestamps=False)
    sr, frame_s = asr.sr, asr.info.frame_s
    recs = recordings(args.fsdd, args.speaker, sr)
    rng = random.Random(0)
    errs: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.utts):
        wave, words, spans = string(recs, rng, sr, rng.randint(3, 8), args.gaps, args.snr)
        wave_t = torch.from_numpy(wave)
        lp = asr.log_probs_of(Source("s", wave=wave_t))
        spiked = align(lp, words, asr.tokenizer, frame_s)
        for how, got in ((SPANS, spiked), (SNAPPED, snap(spiked, frame_db(wave_t, sr)))):
            for w, (a, b) in zip(got, spans, strict=True):
                errs.setdefault(("start", how), []).append(abs(w.start - a) * 1000)
                errs.setdefault(("end", how), []).append(abs(w.end - b) * 1000)
    if args.utts:
        table(args, errs, frame_s)
    if args.find:
        find_truth(asr, recs, args.utts, random.Random(1))
    if args.hour > 0:
        waves, words, seconds = [], [], 0.0
        while seconds < args.hour * 3600:
            wave, ws, _ = string(recs, rng, sr, 8)
            waves.append(wave)
            words += ws
            seconds += len(wave) / sr
        long = torch.from_numpy(np.concatenate(waves))
        del waves
        t0 = time.perf_counter()
        lp = asr.log_probs_of(Source("hour", wave=long))
        t1 = time.perf_counter()
        aligned = snap(align(lp, words, asr.tokenizer, frame_s), frame_db(long, sr))
        t2 = time.perf_counter()
        print(f"\none file of {seconds / 3600:.2f} h, {len(words)} words: log-probs "
              f"{t1 - t0:.1f} s, alignment (snapped to pauses) {t2 - t1:.1f} s, "
              f"RTF {(t2 - t0) / seconds:.4f}, "
              f"peak RSS {peak_mib():.0f} MiB (the audio itself "
              f"{long.numel() * 4 / 2**20:.0f} MiB); last word at "
              f"{aligned[-1].start:.1f} s")


def table(args, errs: dict[tuple[str, str], list[float]], frame_s: float) -> None:
    noise = "no noise" if args.snr is None else f"white noise at {args.snr:g} dB SNR"
    print(f"{args.checkpoint}: {args.utts} strings of {args.speaker}'s digits, "
          f"{len(errs[('start', SPANS)])} words, "
          f"{args.gaps[0]:g}-{args.gaps[1]:g} s between them, {noise}; output frames of "
          f"{frame_s * 1000:.0f} ms")
    print("| boundary | times | mean ms | median ms | 90th pct ms |\n"
          "| --- | --- | --- | --- | --- |")
    for (k, how), e in sorted(errs.items(), key=lambda x: (x[0][0] == "end", x[0][1])):
        a = np.array(e)
        print(f"| word {k} | {how} | {a.mean():.1f} | {np.median(a):.1f} | "
              f"{np.percentile(a, 90):.1f} |")


def find_truth(asr, recs, utts: int, rng: random.Random) -> None:
    sr, frame_s = asr.sr, asr.info.frame_s
    put_in = found_put_in = right = right_lost = dropped = dropped_seen = 0
    errs: dict[str, list[float]] = {SPANS: [], SNAPPED: []}
    for _ in range(utts):
        wave, words, spans = string(recs, rng, sr, rng.randint(3, 8))
        drop = rng.randrange(len(words))
        text = [w for i, w in enumerate(words) if i != drop]
        truth = [s for i, s in enumerate(spans) if i != drop]
        at = rng.randrange(len(text) + 1)
        text.insert(at, rng.choice(WORDS))
        truth.insert(at, None)
        wave_t = torch.from_numpy(wave)
        got = find(asr.log_probs_of(Source("s", wave=wave_t)), text, asr.tokenizer, frame_s,
                   Find())
        put_in += 1
        found_put_in += at in got.missing
        right += len(text) - 1
        right_lost += len([i for i in got.missing if i != at])
        dropped += 1
        a, b = spans[drop]
        dropped_seen += any(s < b and e > a for s, e in got.unmatched)
        for how, words in ((SPANS, got.words), (SNAPPED, snap(got.words, frame_db(wave_t, sr)))):
            for w in words:
                if truth[w.index] is not None:
                    errs[how] += [abs(w.start - truth[w.index][0]) * 1000,
                                  abs(w.end - truth[w.index][1]) * 1000]
    e, f = np.array(errs[SPANS]), np.array(errs[SNAPPED])
    print(f"\n--find, {utts} strings, each with one spoken word left out of its transcript and "
          "one unspoken word put in:")
    print("| put-in words reported missing | right words left out | left-out spoken words "
          "in an unmatched stretch | boundary error of found words, mean / 90th pct ms: "
          "the model's spans; snapped |\n"
          "| --- | --- | --- | --- |")
    print(f"| {found_put_in} / {put_in} | {right_lost} / {right} | {dropped_seen} / {dropped} "
          f"| {e.mean():.1f} / {np.percentile(e, 90):.1f}; {f.mean():.1f} / "
          f"{np.percentile(f, 90):.1f} |")


if __name__ == "__main__":
    main()
