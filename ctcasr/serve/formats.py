"""A transcript in the response formats of OpenAI-style transcription servers
(``response_format``: ``json``, ``text``, ``srt``, ``vtt``, ``verbose_json``).

Subtitles and ``verbose_json`` need segments: the words are grouped into one, closing it at a
pause of ``GAP_S`` or more between two words, or when it holds ``MAX_WORDS`` words or lasts
``MAX_S`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ctcasr.decode.timestamps import WordTime
from ctcasr.infer.transcript import Transcript

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GAP_S, MAX_WORDS, MAX_S = 0.6, 12, 8.0


@dataclass
class Segment:
    start: float
    end: float
    words: list[WordTime] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(w.word for w in self.words)


def segments(t: Transcript) -> list[Segment]:
    """The transcript's words in segments (one empty segment for audio with no words)."""
    out: list[Segment] = []
    for w in t.words:
        last = out[-1] if out else None
        if last is None or w.start - last.end >= GAP_S or len(last.words) >= MAX_WORDS \
                or w.end - last.start > MAX_S:
            out.append(Segment(w.start, w.end, [w]))
        else:
            last.words.append(w)
            last.end = w.end
    if not out and t.text:  # words without times (timestamps off): one segment
        out.append(Segment(t.start, t.start + t.duration))
    return out


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt(t: Transcript) -> str:
    return "".join(f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n"
                   f"{s.text or t.text}\n\n" for i, s in enumerate(segments(t), 1))


def vtt(t: Transcript) -> str:
    return "WEBVTT\n\n" + "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n"
                                  f"{s.text or t.text}\n\n" for s in segments(t))


def verbose_json(t: Transcript) -> dict[str, Any]:
    """OpenAI's ``verbose_json``: text, duration, segments and words (the fields a CTC model
    has no value for are left out)."""
    return {
        "task": "transcribe", "duration": round(t.duration, 3), "text": t.text,
        "segments": [{"id": i, "start": round(s.start, 3), "end": round(s.end, 3),
                      "text": s.text or t.text} for i, s in enumerate(segments(t))],
        "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)}
                  for w in t.words],
    }


def render(t: Transcript, fmt: str) -> tuple[str | dict[str, Any], str]:
    """(the body, its media type) of ``t`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "json":
        return {"text": t.text}, "application/json"
    if fmt == "verbose_json":
        return verbose_json(t), "application/json"
    if fmt == "text":
        return t.text + "\n", "text/plain; charset=utf-8"
    if fmt == "srt":
        return srt(t), "application/x-subrip; charset=utf-8"
    return vtt(t), "text/vtt; charset=utf-8"
