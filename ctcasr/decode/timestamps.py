"""Word times from the CTC alignment of a hypothesis (``torchaudio.functional.forced_align``).

The hypothesis's tokens are force-aligned to the utterance's log-probabilities; each token gets
the frames of its span (``merge_tokens``), a word spans its tokens. Output frame ``t`` starts at
``t x subsampling x frame_shift`` seconds. A word's confidence is the mean of its tokens' mean
frame posteriors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio.functional as AF

from ctcasr.tokenizer import BLANK_ID, SPACE, Tokenizer


@dataclass
class WordTime:
    word: str
    start: float  # seconds
    end: float
    confidence: float


def word_times(
    log_probs: torch.Tensor, tokens: list[int], tokenizer: Tokenizer, frame_s: float,
    text: str | None = None,
) -> list[WordTime]:
    """``log_probs [T, V]`` of one utterance, ``tokens`` its hypothesis; ``frame_s`` = seconds
    per output frame. ``text``: the hypothesis read as words (a phone model's, from the LM
    search), one per word the tokens begin: the words get these names."""
    if not tokens:
        return []
    targets = torch.tensor([tokens], dtype=torch.int32)
    align, scores = AF.forced_align(log_probs.unsqueeze(0).float(), targets, blank=BLANK_ID)
    spans = AF.merge_tokens(align[0], scores[0].exp(), blank=BLANK_ID)
    words: list[WordTime] = []
    confs: list[list[float]] = []
    new_word = True
    for span in spans:
        piece = tokenizer.id_to_piece(span.token)
        if piece.startswith(SPACE):
            new_word, piece = True, piece[len(SPACE) :]
            if not piece:  # a bare word boundary (the character tokenizer's space)
                continue
        if new_word or not words:
            words.append(WordTime(piece, span.start * frame_s, span.end * frame_s, 0.0))
            confs.append([])
            new_word = False
        else:
            words[-1].word += piece
            words[-1].end = span.end * frame_s
        confs[-1].append(float(span.score))
    for w, c in zip(words, confs, strict=True):
        w.confidence = sum(c) / len(c)
    names = text.split() if text is not None else []
    if len(names) == len(words):
        for w, name in zip(words, names, strict=True):
            w.word = name
    return words
