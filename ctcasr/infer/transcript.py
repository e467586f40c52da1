"""What recognising one input gives: :class:`Transcript`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ctcasr.decode.timestamps import WordTime


@dataclass
class Transcript:
    name: str  # the file's path, an utterance's id, or the name given with an array
    text: str
    duration: float  # seconds of audio
    words: list[WordTime] = field(default_factory=list)  # with timestamps
    confidence: float | None = None  # mean word confidence (with timestamps and words)
    start: float = 0.0  # seconds into the stream (a segment of a stream with endpointing)
    nbest: list[tuple[float, str]] = field(default_factory=list)  # (score, text), best first,
    #                                   when the decoder was asked for more than one

    def to_dict(self) -> dict[str, Any]:
        return {
            "audio": self.name, "text": self.text, "duration": round(self.duration, 3),
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3),
                       "confidence": round(w.confidence, 4)} for w in self.words],
        }
