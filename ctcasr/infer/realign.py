"""``ctcasr realign``: for a phone model's training transcripts, the pronunciation of each word
token that the audio supports, among the lexicon's variants.

A phone tokenizer trains every token of a word with the lexicon's first pronunciation; CMUdict
gives "the" DH AH and DH IY, "to" T UW, T IH and T AH, and which one was said depends on the
speaker and the next word. Given a model trained that way, each token with several variants gets
the one under which the model's CTC likelihood of the whole utterance is highest, the other
words held at their current choice (one pass, left to right; a tie keeps the earlier
variant, so the first pronunciation stays unless another is strictly more likely). The choice is
written in the transcript as CMUdict writes variants, ``the(2)`` for the second
pronunciation, which :class:`ctcasr.tokenizer.PhoneTokenizer` reads; training on that manifest
trains the chosen phones. Words with one pronunciation, and the LM's text, are unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ctcasr.data.manifest import Utterance
from ctcasr.errors import CtcasrError
from ctcasr.infer.manifest import source
from ctcasr.infer.transcriber import CHUNK, Transcriber
from ctcasr.lexicon import variant_of
from ctcasr.tokenizer import BLANK_ID, PhoneTokenizer


@dataclass
class Realigned:
    utt: Utterance
    text: str  # the transcript with the chosen variants marked (``the(2)``)
    changed: list[tuple[str, int]]  # (word, chosen variant from 1) where it is not the first


def choose(log_probs: torch.Tensor, words: list[str], tok: PhoneTokenizer) -> list[int]:
    """The variant (from 0) of each word: ``log_probs [T, V]`` of one utterance (module doc)."""
    base = [variant_of(w)[0] for w in words]
    variants = [tok.lexicon.pronounce(w) for w in base]
    choice = [variant_of(w)[1] for w in words]
    lp = log_probs.unsqueeze(1)
    for i, prons in enumerate(variants):
        if len(prons) < 2:
            continue
        seqs = []
        for v in range(len(prons)):
            choice[i] = v
            seqs.append(torch.tensor(tok.encode(" ".join(marked(base, choice)))))
        lens = torch.tensor([len(s) for s in seqs])
        targets = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        nll = F.ctc_loss(lp.expand(-1, len(seqs), -1), targets,
                         torch.full((len(seqs),), log_probs.shape[0]), lens, blank=BLANK_ID,
                         reduction="none")
        choice[i] = int(torch.argmin(torch.nan_to_num(nll, nan=torch.inf)))  # first of equals
    return choice


def marked(words: list[str], choice: list[int]) -> list[str]:
    """``words`` with the variant of each (from 0) marked as CMUdict does, ``the(2)``; the
    first left bare."""
    return [w if v == 0 else f"{w}({v + 1})" for w, v in zip(words, choice, strict=True)]


@torch.no_grad()
def realign(asr: Transcriber, utts: Iterable[Utterance]) -> Iterator[Realigned]:
    """Each utterance of ``utts`` with its pronunciations chosen by ``asr``'s phone model."""
    tok = asr.tokenizer
    if not isinstance(tok, PhoneTokenizer):
        raise CtcasrError(f"realign: the model's tokenizer is {type(tok).__name__}; choosing "
                          "pronunciations needs a phone model (tokenizer.type: phone)")
    utts = list(utts)
    for chunk in range(0, len(utts), CHUNK):
        part = utts[chunk : chunk + CHUNK]
        done: dict[int, Realigned] = {}
        for kept, lps, lens in asr.log_prob_batches([source(u) for u in part]):
            for k, lp, n in zip(kept, lps, lens.tolist(), strict=True):
                u = part[k]
                words = u.text.split()
                choice = choose(lp[:n].float(), words, tok)
                base = [variant_of(w)[0] for w in words]
                done[k] = Realigned(u, " ".join(marked(base, choice)),
                                    [(w, v + 1) for w, v in zip(base, choice, strict=True) if v])
        yield from (done[k] for k in sorted(done))  # the manifest's order


def summary(results: list[Realigned], tok: PhoneTokenizer, top: int = 10) -> list[str]:
    """Lines for the log: how many tokens had a choice, how many changed, the most frequent
    changes (word: first -> chosen pronunciation)."""
    tokens = [w for r in results for w in r.utt.text.split()]
    ambiguous = sum(len(tok.lexicon.pronounce(variant_of(w)[0])) > 1 for w in tokens)
    changes = Counter(c for r in results for c in r.changed)
    lines = [f"{len(results)} utterances, {len(tokens)} word tokens, {ambiguous} with several "
             f"pronunciations, {sum(changes.values())} given another than the first"]
    for (word, v), n in changes.most_common(top):
        prons = tok.lexicon.pronounce(word)
        lines.append(f"  {word}: {' '.join(prons[0])} -> {' '.join(prons[v - 1])} ({n} times)")
    return lines
