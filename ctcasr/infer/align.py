"""``ctcasr align``: given audio and its transcript, where each word and unit is.

The audio goes through the model as ``transcribe`` runs it (long files in windows, their
log-probs joined: :meth:`Transcriber.log_probs_of`); the transcript is normalised as the recipes
normalise text and force-aligned (:func:`ctcasr.decode.align.align`). An utterance that cannot
be aligned (a word the model cannot spell, too little audio for the text) is reported, never
guessed. Output formats: CTM (``id 1 start duration word score``, with ``--units`` one line per
unit), JSON lines (``{"id", "words": [{"word", "start", "end", "score", "units": [...]}]}``) and
Praat TextGrids (a words tier and a units tier; one file per utterance).

With a :class:`~ctcasr.decode.align.Find` (``ctcasr align --find``) the transcript may be
imperfect: words not in the audio are left out (listed in JSON as ``missing``), speech that is
not in the transcript is passed over (``unmatched``), and what remains is aligned.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ctcasr.data.text import normalise
from ctcasr.decode.align import AlignedWord, Find, Span, align, find
from ctcasr.decode.pauses import Snap, snap
from ctcasr.errors import CtcasrError
from ctcasr.infer.transcriber import Source, Transcriber, level

FORMATS = ("ctm", "json", "textgrid")


@dataclass
class Aligned:
    """One source's alignment."""

    source: Source
    duration: float  # seconds
    words: list[AlignedWord]
    finding: bool = False  # with a Find: then also ...
    missing: list[tuple[int, str]] = field(default_factory=list)  # (place, word) not said
    unmatched: list[tuple[float, float]] = field(default_factory=list)  # speech not written


def align_sources(asr: Transcriber, items: Iterable[tuple[Source, str]],
                  on_error: Callable[[CtcasrError], None] | None = None,
                  how: Find | None = None, edges: Snap | None = Snap()) -> Iterator[Aligned]:
    """Each (source, transcript) aligned (``how``: finding the transcript's words in the audio;
    ``edges``: how word edges are moved to the audio's pauses, None: the model's spans as they
    are); a failure raises, or with ``on_error`` is handed to it (naming the source) and left
    out."""
    for src, text in items:
        try:
            words = normalise(text).split()
            if not words:
                raise CtcasrError("the transcript is empty")
            lp = asr.log_probs_of(src)
            duration = src.num_samples(asr.sr) / asr.sr
            if how is None:
                got = Aligned(src, duration, align(lp, words, asr.tokenizer, asr.info.frame_s))
            else:
                f = find(lp, words, asr.tokenizer, asr.info.frame_s, how)
                got = Aligned(src, duration, f.words, True, [(i, words[i]) for i in f.missing],
                              f.unmatched)
            if edges is not None:
                got.words = snap(got.words, level(src, asr.sr), edges)
            yield got
        except CtcasrError as e:
            err = CtcasrError(f"{src.where or src.name}: cannot align: {e}")
            if on_error is None:
                raise err from None
            on_error(err)


def ctm_lines(uid: str, words: list[AlignedWord], units: bool = False) -> list[str]:
    spans: list[Span] = [u for w in words for u in w.units] if units else list(words)
    return [f"{uid} 1 {s.start:.3f} {s.end - s.start:.3f} {s.unit} {s.score:.3f}"
            for s in spans]


def json_line(uid: str, a: Aligned) -> str:
    def span(s: Span) -> dict:
        return {"start": round(s.start, 3), "end": round(s.end, 3), "score": round(s.score, 4)}

    line = {"id": uid, "duration": round(a.duration, 3), "words": [
        {"word": w.unit, **span(w), "units": [{"unit": u.unit, **span(u)} for u in w.units]}
        | ({"index": w.index} if a.finding else {}) for w in a.words]}
    if a.finding:
        line["missing"] = [{"index": i, "word": w} for i, w in a.missing]
        line["unmatched"] = [{"start": round(s, 3), "end": round(e, 3)} for s, e in a.unmatched]
    return json.dumps(line, ensure_ascii=False)


def textgrid(duration: float, words: list[AlignedWord]) -> str:
    """A Praat TextGrid (long text format) with a ``words`` and a ``units`` interval tier;
    the gaps between spans are empty intervals, as Praat wants the tier covered."""
    tiers = [("words", list(words)), ("units", [u for w in words for u in w.units])]
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0",
           f"xmax = {duration:.3f}", "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for n, (name, spans) in enumerate(tiers, 1):
        cells, t = [], 0.0
        for s in spans:
            if s.start > t:
                cells.append((t, s.start, ""))
            cells.append((s.start, s.end, s.unit))
            t = s.end
        if t < duration:
            cells.append((t, duration, ""))
        out += [f"    item [{n}]:", '        class = "IntervalTier"', f'        name = "{name}"',
                "        xmin = 0", f"        xmax = {duration:.3f}",
                f"        intervals: size = {len(cells)}"]
        for k, (a, b, text) in enumerate(cells, 1):
            out += [f"        intervals [{k}]:", f"            xmin = {a:.3f}",
                    f"            xmax = {b:.3f}",
                    f'            text = "{text.replace(chr(34), chr(34) * 2)}"']
    return "\n".join(out) + "\n"


def safe_name(uid: str) -> str:
    """A file name for an utterance id (nothing in it is used as a path)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in uid).lstrip(".") or "utt"
