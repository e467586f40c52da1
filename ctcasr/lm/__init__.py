"""Word language models for shallow fusion in beam search."""

from ctcasr.lm.ngram import NGramLM, train_kneser_ney
from ctcasr.lm.vocab import read_vocab

__all__ = ["NGramLM", "read_vocab", "train_kneser_ney"]
