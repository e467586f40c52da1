"""Word language models for shallow fusion in beam search."""

from ctcasr.lm.ngram import NGramLM, train_kneser_ney

__all__ = ["NGramLM", "train_kneser_ney"]
