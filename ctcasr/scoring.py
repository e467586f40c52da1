"""WER / CER with jiwer, and the report files every decoder writes.

For a test set, ``write_report(out_dir, ...)`` writes the same files whatever the decoder:

- ``hyp.txt``      ``id<TAB>hypothesis``, one line per utterance, manifest order
- ``errors.txt``   per utterance: REF / HYP aligned word by word, errors marked S / D / I
- ``summary.txt``  WER, CER, substitutions / deletions / insertions, counts, top confusions
- ``summary.json`` the same numbers, machine-readable

:class:`ReportWriter` writes them as utterances come in, keeping only counts (``Scorer``), so
decoding any number of utterances takes the same memory.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jiwer


@dataclass
class Score:
    wer: float  # percent
    cer: float  # percent
    words: int  # reference words
    substitutions: int
    deletions: int
    insertions: int
    utterances: int
    sentence_errors: int
    confusions: list[tuple[str, str, int]] = field(default_factory=list)  # (ref, hyp, count)

    def line(self) -> str:
        return (
            f"WER {self.wer:.2f} % [ {self.substitutions + self.deletions + self.insertions} / "
            f"{self.words}, {self.insertions} ins, {self.deletions} del, {self.substitutions} sub ]"
            f"  CER {self.cer:.2f} %  ({self.utterances} utterances)"
        )


class Scorer:
    """WER / CER counts summed over chunks of utterances: the same Score as one jiwer call."""

    def __init__(self, top_confusions: int = 10) -> None:
        self.top_confusions = top_confusions
        self.words = Counter()  # hits, substitutions, deletions, insertions
        self.chars = Counter()
        self.utterances = self.sentence_errors = 0
        self.confusions: Counter[tuple[str, str]] = Counter()

    def add(self, refs: list[str], hyps: list[str]):
        """Score parallel lists of normalised texts; returns jiwer's word output (alignments)."""
        words, chars = jiwer.process_words(refs, hyps), jiwer.process_characters(refs, hyps)
        for counts, out in ((self.words, words), (self.chars, chars)):
            counts.update(hits=out.hits, substitutions=out.substitutions,
                          deletions=out.deletions, insertions=out.insertions)
        self.utterances += len(refs)
        for r, h, chunks in zip(words.references, words.hypotheses, words.alignments, strict=True):
            if any(c.type != "equal" for c in chunks):
                self.sentence_errors += 1
            for c in chunks:
                if c.type == "substitute":
                    pairs = zip(r[c.ref_start_idx : c.ref_end_idx],
                                h[c.hyp_start_idx : c.hyp_end_idx], strict=True)
                    self.confusions.update(pairs)
        return words

    def result(self) -> Score:
        if not self.utterances:
            raise ValueError("nothing to score")
        w = self.words
        return Score(
            wer=100.0 * _error_rate(self.words),
            cer=100.0 * _error_rate(self.chars),
            words=w["hits"] + w["substitutions"] + w["deletions"],
            substitutions=w["substitutions"],
            deletions=w["deletions"],
            insertions=w["insertions"],
            utterances=self.utterances,
            sentence_errors=self.sentence_errors,
            confusions=[(r, h, n) for (r, h), n in
                        self.confusions.most_common(self.top_confusions)],
        )


def _error_rate(c: Counter) -> float:
    """As jiwer computes it (insertions alone when there is no reference word)."""
    ref = c["hits"] + c["substitutions"] + c["deletions"]
    errors = c["substitutions"] + c["deletions"] + c["insertions"]
    return float(errors) / float(ref) if ref else errors


def score(refs: list[str], hyps: list[str], top_confusions: int = 10) -> tuple[Score, object]:
    """Score parallel lists of normalised texts. Returns the Score and jiwer's word output."""
    if not refs:
        raise ValueError("nothing to score")
    scorer = Scorer(top_confusions)
    words = scorer.add(refs, hyps)
    return scorer.result(), words


def render_alignment(uid: str, ref: list[str], hyp: list[str], chunks) -> str:
    """Three aligned lines (REF, HYP, marks) for one utterance."""
    cols: list[tuple[str, str, str]] = []
    for c in chunks:
        r = ref[c.ref_start_idx : c.ref_end_idx]
        h = hyp[c.hyp_start_idx : c.hyp_end_idx]
        if c.type == "equal":
            cols += [(w, w, "") for w in r]
        elif c.type == "substitute":
            cols += [(a, b, "S") for a, b in zip(r, h, strict=True)]
        elif c.type == "delete":
            cols += [(a, "*" * len(a), "D") for a in r]
        else:
            cols += [("*" * len(b), b, "I") for b in h]
    widths = [max(len(a), len(b), len(m)) for a, b, m in cols]
    line = lambda k: " ".join(col[k].ljust(w) for col, w in zip(cols, widths, strict=True))  # noqa: E731
    return f"{uid}\nREF: {line(0).rstrip()}\nHYP: {line(1).rstrip()}\n     {line(2).rstrip()}\n"


class ReportWriter:
    """The report files of one test set, written as utterances are added (in manifest order):
    hyp.txt and errors.txt as they go, the summaries by :meth:`close`."""

    def __init__(self, out_dir: Path, name: str = "", chunk: int = 500) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir, self.name, self.chunk = out_dir, name, chunk
        self.scorer = Scorer()
        self.pending: list[tuple[str, str, str]] = []
        self.hyp = (out_dir / "hyp.txt").open("w", encoding="utf-8")
        self.errors = None  # errors.txt, opened at the first reference

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._close_files()

    def add(self, uid: str, ref: str | None, hyp: str) -> None:
        self.hyp.write(f"{uid}\t{hyp}\n")
        if ref:
            self.pending.append((uid, ref, hyp))
            if len(self.pending) >= self.chunk:
                self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        words = self.scorer.add([r for _, r, _ in self.pending], [h for _, _, h in self.pending])
        if self.errors is None:
            self.errors = (self.out_dir / "errors.txt").open("w", encoding="utf-8")
        for (uid, _, _), r, h, chunks in zip(self.pending, words.references, words.hypotheses,
                                             words.alignments, strict=True):
            self.errors.write(render_alignment(uid, r, h, chunks) + "\n")
        self.pending.clear()

    def _close_files(self) -> None:
        for f in (self.hyp, self.errors):
            if f is not None:
                f.close()

    def close(self) -> Score | None:
        """Finish the files; write the summaries when any utterance had a reference."""
        self._flush()
        self._close_files()
        if not self.scorer.utterances:
            return None
        s = self.scorer.result()
        header = f"{self.name}: " if self.name else ""
        text = [header + s.line(), f"sentence errors: {s.sentence_errors} / {s.utterances}"]
        if s.confusions:
            text.append("most frequent substitutions (ref -> hyp: count):")
            text += [f"  {r} -> {h}: {n}" for r, h, n in s.confusions]
        (self.out_dir / "summary.txt").write_text("\n".join(text) + "\n")
        (self.out_dir / "summary.json").write_text(json.dumps(asdict(s), indent=1) + "\n")
        return s


def write_report(out_dir: Path, ids: list[str], refs: list[str | None], hyps: list[str],
                 name: str = "") -> Score | None:
    """Write hyp.txt always; errors and summaries for the utterances that have a reference."""
    with ReportWriter(out_dir, name) as report:
        for uid, r, h in zip(ids, refs, hyps, strict=True):
            report.add(uid, r, h)
        return report.close()


def read_text_file(path: Path) -> dict[str, str]:
    """Read an ``id<TAB>text`` file (text may be empty)."""
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        uid, _, text = line.partition("\t")
        if uid in out:
            raise ValueError(f"{path}:{n}: duplicate id {uid!r}")
        out[uid] = " ".join(text.split())
    return out
