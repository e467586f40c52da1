"""Word edges moved to the pauses in the audio.

A CTC model emits a unit on a spike of one or two frames and blanks the rest of the time, so a
force-aligned word spans from its first unit's spike to its last one's: its start is near where
the sound starts, but its end is where the last unit fires, often well before the word stops
sounding (and a bidirectional model may fire a little before the sound). What the posteriors
cannot say, the audio's loudness can: :func:`frame_db` is the level of each 10 ms of the audio,
:func:`pauses` the stretches quieter than the recording's own floor plus ``above_db`` for at
least ``min_pause_s``, and :func:`snap` moves each word's edges to the pauses around it. Between
two words the path put apart, a pause there ends the first word where it begins and starts the
next where it ends (with several, the first and the last: what lies between is neither word's);
with none (speech running on), the first word ends where the next starts. A recording at one
level throughout (no quiet stretch at all, or nothing louder than its floor) moves nothing.

The level is relative to the recording (its ``floor_pct``-th percentile frame), so a steady
background noise sets the floor rather than being taken for speech; a recording that never
pauses has its quietest frames as floor, and only dips deeper than ``above_db`` under the words'
level count. (stable-ts snaps Whisper's word times to silences found by loudness for the same
reason.)
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, replace

import torch

from ctcasr.decode.align import AlignedWord

HOP_S = 0.01  # the level's frame


@dataclass(frozen=True)
class Snap:
    """How pauses are found (module doc)."""

    above_db: float = 6.0  # a frame this far above the floor is sound
    floor_pct: float = 10.0  # the floor: this percentile of the recording's frame levels
    min_pause_s: float = 0.03  # a quiet stretch this long is a pause (shorter: a closure)


def frame_db(wave: torch.Tensor, sr: int, hop_s: float = HOP_S) -> torch.Tensor:
    """The level (dB of the mean square) of each whole ``hop_s`` of ``wave``; a long file may
    be given piece by piece, each a whole number of frames, and the results joined."""
    hop = round(sr * hop_s)
    frames = wave[: wave.shape[0] // hop * hop].view(-1, hop)
    power = torch.cat([f.float().pow(2).mean(1) for f in frames.split(6000)]  # a minute at a time
                      or [torch.empty(0)])
    return 10.0 * torch.log10(power + 1e-10)


def pauses(db: torch.Tensor, how: Snap = Snap(), hop_s: float = HOP_S) -> list[tuple[int, int]]:
    """The pauses ``[(first frame, end frame)]`` of a level track: quiet stretches of at least
    ``min_pause_s`` (one at either end of the recording counts at any length); none where the
    track's loud frames (95th percentile) are not ``above_db`` over its floor."""
    if db.numel() == 0:
        return []
    floor, loud = torch.quantile(db.double(), torch.tensor([how.floor_pct / 100, 0.95],
                                                           dtype=torch.double)).tolist()
    if loud <= floor + how.above_db:
        return []  # one level throughout: no sound stands out of it, nothing to tell apart
    quiet = db <= floor + how.above_db
    edges = torch.diff(quiet.to(torch.int8), prepend=torch.zeros(1, dtype=torch.int8),
                       append=torch.zeros(1, dtype=torch.int8))
    starts = torch.nonzero(edges == 1).flatten().tolist()
    ends = torch.nonzero(edges == -1).flatten().tolist()
    shortest = round(how.min_pause_s / hop_s)
    return [(a, b) for a, b in zip(starts, ends, strict=True)
            if b - a >= shortest or a == 0 or b == len(db)]


def snap(words: list[AlignedWord], db: torch.Tensor, how: Snap = Snap(),
         hop_s: float = HOP_S) -> list[AlignedWord]:
    """``words`` (in time order, as aligned) with their edges moved to the pauses of ``db``
    (module doc); a word's first unit starts and its last unit ends with it."""
    spans = snap_spans([(w.start, w.end) for w in words], db, how, hop_s)
    return [w if s is None else _moved(w, *s) for w, s in zip(words, spans, strict=True)]


def snap_spans(spans: list[tuple[float, float]], db: torch.Tensor, how: Snap = Snap(),
               hop_s: float = HOP_S) -> list[tuple[float, float] | None]:
    """Each ``(start, end)`` (seconds, in time order) moved to the pauses of ``db`` (module
    doc), or None where it stays as it is. A span never shrinks to nothing: an edge stays at
    least one level frame inside its own span; one inside a pause stays."""
    found = pauses(db, how, hop_s)
    if not spans or not found:
        return [None] * len(spans)
    frames = len(db)
    start = [min(round(a / hop_s), frames) for a, _ in spans]
    end = [min(max(round(b / hop_s), s + 1), frames) for (_, b), s in zip(spans, start,
                                                                          strict=True)]
    new_start, new_end = list(start), list(end)
    firsts, lasts = [a for a, _ in found], [b for _, b in found]  # both ascending
    for i in range(len(spans) + 1):  # the gap before span i (i = len: after the last)
        lo = end[i - 1] if i else 0
        hi = start[i] if i < len(spans) else frames
        inside = found[bisect_left(lasts, lo) : bisect_right(firsts, hi)]  # touching [lo, hi]
        if inside:
            if i:
                new_end[i - 1] = max(inside[0][0], start[i - 1] + 1)
            if i < len(spans):
                new_start[i] = min(inside[-1][1], end[i] - 1)
        elif 0 < i < len(spans):
            new_end[i - 1] = max(hi, new_end[i - 1])
    return [None if a >= b else (a * hop_s, b * hop_s)  # (a span inside a pause: as is)
            for a, b in zip(new_start, new_end, strict=True)]


def _moved(w: AlignedWord, start: float, end: float) -> AlignedWord:
    """``w`` from ``start`` to ``end``, its units kept inside, the first and last at the edges."""
    units = [replace(u, start=min(max(u.start, start), end), end=min(max(u.end, start), end))
             for u in w.units]
    if units:
        units[0] = replace(units[0], start=start)
        units[-1] = replace(units[-1], end=end)
    return replace(w, start=start, end=end, units=units)
