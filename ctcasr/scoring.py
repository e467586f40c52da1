"""WER / CER with jiwer, and the report files every decoder writes.

For a test set, ``write_report(out_dir, ...)`` writes the same files whatever the decoder:

- ``hyp.txt``      ``id<TAB>hypothesis``, one line per utterance, manifest order
- ``errors.txt``   per utterance: REF / HYP aligned word by word, errors marked S / D / I
- ``summary.txt``  WER, CER, substitutions / deletions / insertions, counts, top confusions
- ``summary.json`` the same numbers, machine-readable
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


def score(refs: list[str], hyps: list[str], top_confusions: int = 10) -> tuple[Score, object]:
    """Score parallel lists of normalised texts. Returns the Score and jiwer's word output."""
    if not refs:
        raise ValueError("nothing to score")
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    confusions: Counter[tuple[str, str]] = Counter()
    sentence_errors = 0
    for r, h, chunks in zip(words.references, words.hypotheses, words.alignments, strict=True):
        if any(c.type != "equal" for c in chunks):
            sentence_errors += 1
        for c in chunks:
            if c.type == "substitute":
                pairs = zip(r[c.ref_start_idx : c.ref_end_idx], h[c.hyp_start_idx : c.hyp_end_idx],
                            strict=True)
                confusions.update(pairs)
    n_words = words.hits + words.substitutions + words.deletions
    return (
        Score(
            wer=100.0 * words.wer,
            cer=100.0 * chars.cer,
            words=n_words,
            substitutions=words.substitutions,
            deletions=words.deletions,
            insertions=words.insertions,
            utterances=len(refs),
            sentence_errors=sentence_errors,
            confusions=[(r, h, n) for (r, h), n in confusions.most_common(top_confusions)],
        ),
        words,
    )


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


def write_report(out_dir: Path, ids: list[str], refs: list[str | None], hyps: list[str],
                 name: str = "") -> Score | None:
    """Write hyp.txt always; errors and summaries for the utterances that have a reference."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "hyp.txt").open("w", encoding="utf-8") as f:
        for uid, h in zip(ids, hyps, strict=True):
            f.write(f"{uid}\t{h}\n")
    scored = [(u, r, h) for u, r, h in zip(ids, refs, hyps, strict=True) if r]
    if not scored:
        return None
    s, words = score([r for _, r, _ in scored], [h for _, _, h in scored])
    with (out_dir / "errors.txt").open("w", encoding="utf-8") as f:
        for (uid, _, _), r, h, chunks in zip(scored, words.references, words.hypotheses,
                                             words.alignments, strict=True):
            f.write(render_alignment(uid, r, h, chunks) + "\n")
    header = f"{name}: " if name else ""
    text = [header + s.line(), f"sentence errors: {s.sentence_errors} / {s.utterances}"]
    if s.confusions:
        text.append("most frequent substitutions (ref -> hyp: count):")
        text += [f"  {r} -> {h}: {n}" for r, h, n in s.confusions]
    (out_dir / "summary.txt").write_text("\n".join(text) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(asdict(s), indent=1) + "\n")
    return s


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
