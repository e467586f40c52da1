import io

import pytest
import torch

from ctcasr.config import TokenizerConfig
from ctcasr.tokenizer import (
    BLANK_ID,
    CharTokenizer,
    WordTokenizer,
    tokenizer_from_state,
    train_tokenizer,
)

TEXTS = ["hello world", "the quick brown fox", "jumps over the lazy dog", "hello there"] * 10


def reload(tok):
    buf = io.BytesIO()
    torch.save(tok.state_dict(), buf)
    buf.seek(0)
    return tokenizer_from_state(torch.load(buf, weights_only=True))


@pytest.mark.parametrize("kind, size", [("char", 0), ("word", 0), ("bpe", 40), ("unigram", 40)])
def test_round_trip_and_blank(kind, size):
    tok = train_tokenizer(TokenizerConfig(kind, size), TEXTS)
    for text in ["hello world", "the lazy fox jumps", "dog"]:
        ids = tok.encode(text)
        assert ids and BLANK_ID not in ids
        assert tok.decode(ids) == text
        assert reload(tok).encode(text) == ids
    assert reload(tok).vocab_size == tok.vocab_size
    assert tok.id_to_piece(BLANK_ID) == "<blank>"


@pytest.mark.parametrize("kind, size", [("char", 0), ("bpe", 40)])
def test_unencodable_character_is_named(kind, size):
    tok = train_tokenizer(TokenizerConfig(kind, size), TEXTS)
    with pytest.raises(ValueError, match="'Z'"):
        tok.encode("hello Zebra")


def test_char_vocab_and_word_starts():
    tok = CharTokenizer.train(["ab ba"])
    assert tok.pieces == ["<blank>", "a", "b", "▁"]
    assert tok.encode("ab  ba") == [1, 2, 3, 2, 1]
    assert tok.decode([0, 1, 2, 0, 3, 2, 1]) == "ab ba"
    assert [tok.is_word_start(i) for i in range(4)] == [False, False, False, True]


def test_word_vocab_and_unknown_word():
    tok = WordTokenizer.train(["two one", "one  three"])
    assert tok.pieces == ["<blank>", "▁one", "▁three", "▁two"]
    assert tok.encode(" one two ") == [1, 3]
    assert tok.decode([0, 1, 1, 0, 3]) == "one one two"  # decode does not collapse repeats
    assert all(tok.is_word_start(i) for i in range(1, 4)) and not tok.is_word_start(0)
    with pytest.raises(ValueError, match="'four'"):
        tok.encode("one four")


@pytest.mark.parametrize("kind, size", [("char", 0), ("word", 0), ("bpe", 40), ("unigram", 40)])
def test_tokenizer_file_round_trip(tmp_path, kind, size):
    from ctcasr.tokenizer import make_tokenizer, save_tokenizer

    cfg = TokenizerConfig(kind, size)
    tok = train_tokenizer(cfg, TEXTS)
    save_tokenizer(tok, cfg, tmp_path / "tok.json")
    back = make_tokenizer(TokenizerConfig(kind, size, str(tmp_path / "tok.json")), ["unused"])
    assert back.vocab_size == tok.vocab_size
    assert [back.id_to_piece(i) for i in range(back.vocab_size)] == \
        [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    for text in ["hello world", "the lazy fox jumps"]:
        assert back.encode(text) == tok.encode(text)
        assert back.decode(back.encode(text)) == text


def test_tokenizer_file_must_match_the_config(tmp_path):
    from ctcasr.errors import CtcasrError
    from ctcasr.tokenizer import load_tokenizer, save_tokenizer

    cfg = TokenizerConfig("bpe", 40)
    save_tokenizer(train_tokenizer(cfg, TEXTS), cfg, tmp_path / "tok.json")
    with pytest.raises(CtcasrError, match="holds a bpe tokenizer of vocab_size 40, but the "
                       "config says bpe of vocab_size 60"):
        load_tokenizer(tmp_path / "tok.json", TokenizerConfig("bpe", 60))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CtcasrError, match="bad.json: not a tokenizer file"):
        load_tokenizer(tmp_path / "bad.json")
    with pytest.raises(CtcasrError, match="missing.json: cannot read tokenizer"):
        load_tokenizer(tmp_path / "missing.json")
