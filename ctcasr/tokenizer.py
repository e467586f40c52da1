"""Tokenizers: characters, whole words, SentencePiece (BPE / unigram) or phones through a
pronunciation lexicon; CTC blank at id 0.

``BLANK_ID`` is defined here and nowhere else. A tokenizer serialises to a plain dict of
strings / ints / uint8 tensors (``state_dict``) so that it travels inside a checkpoint that
loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

from ctcasr.config import TokenizerConfig
from ctcasr.errors import CtcasrError
from ctcasr.lexicon import PHONES, Lexicon, variant_of

BLANK_ID = 0
BLANK = "<blank>"
SPACE = "▁"  # how the character tokenizer shows the word boundary (as SentencePiece does)
log = logging.getLogger("ctcasr.tokenizer")


class Tokenizer(ABC):
    """Text <-> token ids. Id ``BLANK_ID`` is the CTC blank and is never produced by encode."""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Raises ValueError naming the first character it cannot encode."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str: ...

    @abstractmethod
    def id_to_piece(self, i: int) -> str: ...

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    def is_word_start(self, i: int) -> bool:
        """True when token ``i`` begins a new word (used by word LMs and timestamps)."""
        return self.id_to_piece(i).startswith(SPACE)

    def reference(self, text: str) -> str:
        """What a decoded hypothesis (:meth:`decode`) is scored against, for the text ``text``:
        the text itself, except for phone models (its phones)."""
        return text

    def spelling(self) -> tuple[list[str], Any]:
        """How the LM search spells a word with these tokens: the tokens' pieces, and a
        function ``word -> [spellings]`` in the same alphabet, or None (here) when a word is
        spelled by its own characters (see :meth:`ctcasr.decode.beam.Spelling.build`)."""
        return [self.id_to_piece(i) for i in range(self.vocab_size)], None


class CharTokenizer(Tokenizer):
    """One token per character; the space is the token ``▁``."""

    def __init__(self, chars: list[str]) -> None:
        self.pieces = [BLANK, *chars]
        self.index = {c: i for i, c in enumerate(self.pieces)}

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        chars: set[str] = set()
        for t in texts:
            chars.update(t.replace(" ", SPACE))
        return cls(sorted(chars))

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> list[int]:
        ids = []
        for c in " ".join(text.split()).replace(" ", SPACE):
            i = self.index.get(c)
            if i is None or i == BLANK_ID:
                raise ValueError(f"character {c!r} is not in the tokenizer's vocabulary")
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        s = "".join(self.pieces[i] for i in ids if i != BLANK_ID)
        return " ".join(s.replace(SPACE, " ").split())

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]

    def is_word_start(self, i: int) -> bool:
        return self.pieces[i] == SPACE

    def state_dict(self) -> dict[str, Any]:
        return {"type": "char", "chars": self.pieces[1:]}


class WordTokenizer(Tokenizer):
    """One token per word of the training text (closed vocabulary: digits, commands, yes/no).
    Pieces are ``▁word``, so every token starts a word for LMs and timestamps."""

    def __init__(self, words: list[str]) -> None:
        self.pieces = [BLANK, *(SPACE + w for w in words)]
        self.index = {w: i for i, w in enumerate(words, start=1)}

    @classmethod
    def train(cls, texts: Iterable[str]) -> WordTokenizer:
        words: set[str] = set()
        for t in texts:
            words.update(t.split())
        return cls(sorted(words))

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> list[int]:
        ids = []
        for w in text.split():
            i = self.index.get(w)
            if i is None:
                raise ValueError(f"word {w!r} is not in the tokenizer's vocabulary")
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.pieces[i][len(SPACE) :] for i in ids if i != BLANK_ID)

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]

    def state_dict(self) -> dict[str, Any]:
        return {"type": "word", "words": [p[len(SPACE) :] for p in self.pieces[1:]]}


class SentencePieceTokenizer(Tokenizer):
    """SentencePiece (BPE or unigram). The model's pad id 0 serves as the CTC blank."""

    def __init__(self, model_proto: bytes) -> None:
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        if self.sp.pad_id() != BLANK_ID:
            raise CtcasrError("SentencePiece model must reserve id 0 (pad) for the CTC blank")

    @classmethod
    def train(
        cls, texts: Iterable[str], model_type: str, vocab_size: int
    ) -> SentencePieceTokenizer:
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(list(texts)),
            model_writer=buf,
            model_type=model_type,
            vocab_size=vocab_size,
            character_coverage=1.0,
            pad_id=BLANK_ID,
            pad_piece=BLANK,
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            hard_vocab_limit=False,
            num_threads=1,
            minloglevel=2,
        )
        return cls(buf.getvalue())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        ids = self.sp.encode(" ".join(text.split()))
        if self.sp.unk_id() in ids:
            unk = self.sp.unk_id()
            bad = next((c for c in dict.fromkeys(text) if unk in self.sp.encode(c)), "?")
            raise ValueError(f"character {bad!r} is not in the tokenizer's vocabulary")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([i for i in ids if i != BLANK_ID])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def state_dict(self) -> dict[str, Any]:
        model = torch.frombuffer(bytearray(self.proto), dtype=torch.uint8)
        return {"type": "sentencepiece", "model": model}


class PhoneTokenizer(Tokenizer):
    """Words -> phones through a pronunciation lexicon (:mod:`ctcasr.lexicon`; CMUdict by
    default, 39 phones). Each phone is two tokens, ``▁AH`` where a word begins and ``AH`` inside
    one (Kaldi's word-position-dependent phones, with two positions instead of four), so that
    greedy output, word times and the LM search all see where words begin. A word with several
    pronunciations is trained with the lexicon's first, unless the transcript names another as
    CMUdict does, ``the(2)`` (``ctcasr realign`` writes such transcripts). ``decode`` gives
    phones (``HH AH L OW W ER L D``): scored against :meth:`reference`, its WER is the phone
    error rate; words come from the beam search with an LM, over the lexicon
    (:mod:`ctcasr.decode.beam`)."""

    def __init__(self, lexicon: Lexicon) -> None:
        self.lexicon = lexicon
        self.pieces = [BLANK, *(SPACE + p for p in PHONES), *PHONES]
        self.index = {p: i for i, p in enumerate(self.pieces)}
        self._prons: dict[str, tuple[str, ...]] = {}

    @classmethod
    def train(cls, texts: Iterable[str], lexicon: str = "") -> PhoneTokenizer:
        lex = Lexicon.read(lexicon) if lexicon else default_lexicon()
        tok = cls(Lexicon(lex.entries, lex.name))  # its own count of guessed words
        words = {w for t in texts for w in t.split()}
        for w in sorted(words):
            tok.pronunciation(w)
        missing = sum(tok.lexicon.guessed.values())
        log.info("phone tokenizer: %d word types, %d not in %s (guessed: %s)", len(words),
                 missing, lex.name, dict(tok.lexicon.guessed) or "none")
        return tok

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def pronunciation(self, word: str) -> tuple[str, ...]:
        if word not in self._prons:
            base, k = variant_of(word)
            prons = self.lexicon.pronounce(base)
            if k >= len(prons) or k < 0:
                raise ValueError(f"{word!r}: {self.lexicon.name} has {len(prons)} "
                                 f"pronunciation(s) of {base!r}")
            self._prons[word] = prons[k]
        return self._prons[word]

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            first, *rest = self.pronunciation(word)
            ids += [self.index[SPACE + first], *(self.index[p] for p in rest)]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.pieces[i].removeprefix(SPACE) for i in ids if i != BLANK_ID)

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]

    def reference(self, text: str) -> str:
        return self.decode(self.encode(text))

    def spelling(self) -> tuple[list[str], Any]:
        """Phones as one private-use character each, so that a pronunciation is a string."""
        code = {p: chr(0xE000 + k) for k, p in enumerate(PHONES)}
        pieces = [BLANK] + [SPACE + code[p] for p in PHONES] + [code[p] for p in PHONES]
        return pieces, lambda w: ["".join(code[p] for p in pron)
                                  for pron in self.lexicon.pronounce(w)]

    def state_dict(self) -> dict[str, Any]:
        if self.lexicon.name == "cmudict":  # the locked package: no need to carry 135k words
            return {"type": "phone", "lexicon": "cmudict"}
        return {"type": "phone", "lexicon": self.lexicon.name,
                "entries": {w: [" ".join(p) for p in ps] for w, ps in
                            self.lexicon.entries.items()}}


@functools.lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    return Lexicon.cmudict()


def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]) -> Tokenizer:
    if cfg.type == "char":
        return CharTokenizer.train(texts)
    if cfg.type == "word":
        return WordTokenizer.train(texts)
    if cfg.type in ("bpe", "unigram"):
        if cfg.vocab_size <= 0:
            raise CtcasrError(f"tokenizer.vocab_size must be > 0 for type {cfg.type!r}")
        return SentencePieceTokenizer.train(texts, cfg.type, cfg.vocab_size)
    if cfg.type == "phone":
        return PhoneTokenizer.train(texts, cfg.lexicon)
    raise CtcasrError(f"tokenizer.type: unknown {cfg.type!r} (choose char, word, bpe, unigram "
                      "or phone)")


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    if state["type"] == "char":
        return CharTokenizer(list(state["chars"]))
    if state["type"] == "word":
        return WordTokenizer(list(state["words"]))
    if state["type"] == "sentencepiece":
        return SentencePieceTokenizer(bytes(state["model"].numpy().tobytes()))
    if state["type"] == "phone":
        if "entries" not in state:
            return PhoneTokenizer(Lexicon(default_lexicon().entries, state["lexicon"]))
        return PhoneTokenizer(Lexicon({w: [tuple(p.split()) for p in ps]
                                       for w, ps in state["entries"].items()}, state["lexicon"]))
    raise CtcasrError(f"unknown tokenizer type {state['type']!r} in checkpoint")


def make_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]) -> Tokenizer:
    """The tokenizer in ``cfg.path`` (checked against ``cfg``), else one trained on ``texts``."""
    return load_tokenizer(cfg.path, cfg) if cfg.path else train_tokenizer(cfg, texts)


def save_tokenizer(tok: Tokenizer, cfg: TokenizerConfig, path: str | Path) -> None:
    """A JSON file: the config it was trained with, its pieces (to read) and its state."""
    state = {k: base64.b64encode(v.numpy().tobytes()).decode() if isinstance(v, torch.Tensor)
             else v for k, v in tok.state_dict().items()}
    doc = {"type": cfg.type, "vocab_size": cfg.vocab_size, "state": state,
           "pieces": [tok.id_to_piece(i) for i in range(tok.vocab_size)]}
    Path(path).write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def load_tokenizer(path: str | Path, cfg: TokenizerConfig | None = None) -> Tokenizer:
    """Read :func:`save_tokenizer`'s file; with ``cfg``, its type and size must match."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        state = dict(doc["state"])
        trained = (doc["type"], doc["vocab_size"])
    except OSError as e:
        raise CtcasrError(f"{path}: cannot read tokenizer: {e.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise CtcasrError(f"{path}: not a tokenizer file written by `ctcasr tokenizer`") from None
    if cfg is not None and trained != (cfg.type, cfg.vocab_size):
        raise CtcasrError(
            f"tokenizer.path {path} holds a {trained[0]} tokenizer of vocab_size {trained[1]}, "
            f"but the config says {cfg.type} of vocab_size {cfg.vocab_size}")
    if state.get("type") == "sentencepiece":
        state["model"] = torch.frombuffer(bytearray(base64.b64decode(state["model"])),
                                          dtype=torch.uint8)
    return tokenizer_from_state(state)
