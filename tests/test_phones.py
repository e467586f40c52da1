"""Phone models: the lexicon (file:line errors, the fallback for missing words), the phone
tokenizer, the LM search over the lexicon's pronunciations (equal to brute force; homophones
chosen by the LM), and a trained phone model through transcribe, decode, stream and export."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from test_transcribe import SR, make_checkpoint, run, utterance

import ctcasr
from ctcasr.config import TokenizerConfig
from ctcasr.decode import DecodeOptions, make_decoder, output_text
from ctcasr.errors import CtcasrError
from ctcasr.lexicon import PHONES, Lexicon
from ctcasr.lm.ngram import NGramLM, train_kneser_ney
from ctcasr.scoring import score
from ctcasr.tokenizer import (
    SPACE,
    PhoneTokenizer,
    load_tokenizer,
    save_tokenizer,
    tokenizer_from_state,
    train_tokenizer,
)

LEXICON = """;;; a test lexicon
ab AE1 B
ba B AA1
ba(2) B AH0  # a second pronunciation
abb AE B
cat K AE T
sun S AH N
flower F L AW ER
to T UW
two T UW
too T UW
go G OW
want W AA N T
"""


@pytest.fixture
def lexicon_file(tmp_path):
    path = tmp_path / "lexicon.txt"
    path.write_text(LEXICON)
    return path


def test_lexicon_file_and_its_errors(tmp_path, lexicon_file):
    lex = Lexicon.read(lexicon_file)
    assert lex.entries["ba"] == [("B", "AA"), ("B", "AH")]  # stress gone, variants kept
    assert lex.entries["two"] == [("T", "UW")] and len(lex.entries) == 11
    for text, why in [("ab\n", "no phones after the word"),
                      ("ab AE B\nba B XX\n", "unknown phone 'XX'")]:
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(CtcasrError, match=f"bad.txt:{text.count(chr(10))}: {why}"):
            Lexicon.read(bad)
    with pytest.raises(CtcasrError, match="cannot read lexicon"):
        Lexicon.read(tmp_path / "missing.txt")
    cmu = Lexicon.cmudict()
    assert cmu.entries["hello"][0] == ("HH", "AH", "L", "OW") and len(cmu.entries) > 120_000
    assert {p for ps in cmu.entries.values() for pron in ps for p in pron} == set(PHONES)


def test_missing_words_are_guessed(lexicon_file):
    lex = Lexicon.read(lexicon_file)
    assert lex.pronounce("cat's") == [("K", "AE", "T", "S")]  # voiceless: S
    assert lex.pronounce("ab's") == [("AE", "B", "Z")]  # voiced: Z
    assert lex.pronounce("cats") == [("K", "AE", "T", "S")]
    assert lex.pronounce("sunflower") == [("S", "AH", "N", "F", "L", "AW", "ER")]
    assert lex.pronounce("shatch") == [("SH", "AE", "CH")]  # letter to sound
    assert lex.guessed == {"suffix": 3, "compound": 1, "letters": 1}
    with pytest.raises(CtcasrError, match="no pronunciation for '123'"):
        lex.pronounce("123")


def test_phone_tokenizer(tmp_path, lexicon_file):
    tok = train_tokenizer(TokenizerConfig(type="phone", lexicon=str(lexicon_file)),
                          ["ab ba", "cat"])
    assert tok.vocab_size == 1 + 2 * len(PHONES)
    ids = tok.encode("ba cat's")
    assert [tok.id_to_piece(i) for i in ids] == [SPACE + "B", "AA", SPACE + "K", "AE", "T", "S"]
    assert [tok.is_word_start(i) for i in ids] == [True, False, True, False, False, False]
    assert tok.decode(ids) == "B AA K AE T S" == tok.reference("ba cat's")
    again = tokenizer_from_state(json.loads(json.dumps(tok.state_dict())))
    assert again.encode("sunflower two") == tok.encode("sunflower two")
    path = tmp_path / "tok.json"
    save_tokenizer(tok, TokenizerConfig(type="phone"), path)
    assert load_tokenizer(path).decode(ids) == "B AA K AE T S"
    cmu = PhoneTokenizer.train(["hello world"])
    assert cmu.state_dict() == {"type": "phone", "lexicon": "cmudict"}  # no 135k words inside
    assert tokenizer_from_state(cmu.state_dict()).reference("hello") == "HH AH L OW"


def ctc_logp(lp: torch.Tensor, tokens: list[int]) -> float:
    """ln P(tokens | lp) over all CTC alignments."""
    if not tokens:
        return float(lp[:, 0].sum())
    return -float(torch.nn.functional.ctc_loss(
        lp[:, None], torch.tensor([tokens]), torch.tensor([lp.shape[0]]),
        torch.tensor([len(tokens)]), reduction="sum"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lexicon_search_equals_brute_force(lexicon_file, tmp_path, seed):
    """A unigram LM over words with homophones (to / two / too) and two pronunciations (ba):
    the search's best word sequence is the brute-force best of CTC + LM over every sequence of
    up to 3 words (homophones compete through the LM; a unigram LM makes the choice exact)."""
    tok = PhoneTokenizer(Lexicon.read(lexicon_file))
    lm = NGramLM.read_arpa(write(tmp_path, train_kneser_ney(
        ["two cat", "to go", "ba ba", "too", "ab two", "ba go cat"], order=1)))
    words = [w for w in lm.tables.words if not w.startswith("<")]
    # log-probs that favour the phones of a random word sequence, with noise
    g = torch.Generator().manual_seed(seed)
    truth = [words[i] for i in torch.randint(len(words), (3,), generator=g)]
    ids = tok.encode(" ".join(truth))
    frames = []
    for t in ids:
        frames += [t, t, 0]
    lp = torch.randn(len(frames), tok.vocab_size, generator=g) * 2
    lp[torch.arange(len(frames)), torch.tensor(frames)] += 6
    lp = lp.log_softmax(-1)
    opts = DecodeOptions(beam=200, prune=math.inf, lm=str(tmp_path / "lm.arpa"), lm_weight=1.0,
                         word_bonus=0.5, unk_penalty=-math.inf)
    dec = make_decoder("beam", opts, tok)
    text_of, reference = output_text(dec, tok)
    best = dec(lp[None].double(), torch.tensor([lp.shape[0]]))[0][0]
    got = text_of(best.tokens)

    def total(seq: tuple[str, ...]) -> float:
        lm_terms = sum(lm.log_prob((), w) for w in seq) + lm.log_prob((), "</s>")
        acoustic = max(ctc_logp(lp, [i for w, k in zip(seq, prons, strict=True)
                                     for i in encode(tok, w, k)])
                       for prons in itertools.product(*(range(len(tok.lexicon.entries[w]))
                                                        for w in seq)))
        return acoustic + lm_terms + 0.5 * len(seq)

    seqs = [s for n in range(0, 4) for s in itertools.product(words, repeat=n)]
    want = max(seqs, key=total)
    assert got == " ".join(want)
    assert reference("two cat") == "two cat"  # words are scored against words


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_open_vocabulary_search_equals_brute_force(lexicon_file, tmp_path, seed):
    """Words outside the LM from a word list with counts (--vocab): each is the LM's <unk> times
    its share of the counts, plus the OOV penalty; an LM word shadows an extra word spelled the
    same (ab / abb), and of extra homophones the most frequent stays (two, not to / too). The
    search's best equals brute force over every sequence of up to 3 words, and the extra words
    come out by name."""
    tok = PhoneTokenizer(Lexicon.read(lexicon_file))
    lm = NGramLM.read_arpa(write(tmp_path, train_kneser_ney(["cat go", "go cat", "ab"],
                                                            order=1)))
    counts = {"sun": 3, "flower": 1, "want": 2, "to": 1, "two": 4, "too": 2, "abb": 5, "go": 9}
    (tmp_path / "vocab.txt").write_text("# word count\n" + "".join(
        f"{w} {c}\n" for w, c in counts.items()))
    extra = {w: c for w, c in counts.items() if w not in lm.tables.words}
    total = sum(extra.values())
    words = ["cat", "go", "ab", "sun", "flower", "want", "two"]  # what can be said
    g = torch.Generator().manual_seed(seed)
    truth = [words[i] for i in torch.randint(3, len(words), (2,), generator=g)]
    truth.insert(int(torch.randint(3, (1,), generator=g)), words[seed])
    frames = []
    for t in tok.encode(" ".join(truth)):
        frames += [t, t, 0]
    lp = torch.randn(len(frames), tok.vocab_size, generator=g) * 2
    lp[torch.arange(len(frames)), torch.tensor(frames)] += 6
    lp = lp.log_softmax(-1)
    opts = DecodeOptions(beam=200, prune=math.inf, lm=str(tmp_path / "lm.arpa"), lm_weight=1.0,
                         word_bonus=0.5, unk_penalty=-1.5, vocab=str(tmp_path / "vocab.txt"))
    dec = make_decoder("beam", opts, tok)
    got = output_text(dec, tok)[0](dec(lp[None].double(), torch.tensor([len(frames)]))[0][0]
                                   .tokens)

    def lm_term(w: str) -> float:
        if w in extra:
            return lm.log_prob((), "<unk>") + math.log(extra[w] / total) - 1.5
        return lm.log_prob((), w)

    def total_score(seq: tuple[str, ...]) -> float:
        acoustic = ctc_logp(lp, [i for w in seq for i in encode(tok, w, 0)])
        return acoustic + sum(map(lm_term, seq)) + lm.log_prob((), "</s>") + 0.5 * len(seq)

    want = max((s for n in range(4) for s in itertools.product(words, repeat=n)),
               key=total_score)
    assert got == " ".join(want)
    assert set(want) & set(extra)  # (the case is about extra words: some win)


def test_vocab_file_errors(tmp_path):
    from ctcasr.lm import read_vocab

    path = tmp_path / "vocab.txt"
    path.write_text("under 3\nrisk\n\n# a comment\nunder 2.5\n")
    assert read_vocab(path) == {"under": 5.5, "risk": 1.0}
    for text, why in [("a 1\nb -2\n", ":2: the count of 'b' must be a positive number"),
                      ("a 1 2\n", ":1: expected 'word [count]'"),
                      ("a x\n", ":1: the count of 'a'"), ("# nothing\n", "has no words")]:
        path.write_text(text)
        with pytest.raises(CtcasrError, match=re.escape(why)):
            read_vocab(path)
    with pytest.raises(CtcasrError, match="--vocab needs --lm"):
        make_decoder("beam", DecodeOptions(vocab=str(path)), PhoneTokenizer(Lexicon({}, "x")))


def encode(tok: PhoneTokenizer, word: str, which: int) -> list[int]:
    first, *rest = tok.lexicon.entries[word][which]
    return [tok.index[SPACE + first], *(tok.index[p] for p in rest)]


def write(tmp_path, lm: NGramLM):
    lm.write_arpa(tmp_path / "lm.arpa")
    return tmp_path / "lm.arpa"


@pytest.fixture(scope="module")
def phone_model(tmp_path_factory):
    """A tiny BiLSTM trained (to exactness, by construction) on phones of the two test words,
    through a two-word lexicon file; and an LM over those words."""
    d = tmp_path_factory.mktemp("phone")
    (d / "lexicon.txt").write_text("ab AE B\nba B AA\n")
    ckpt = make_checkpoint(d / "phone.pt", "lstm", train_steps=2000, hidden_size=64,
                           tokenizer={"type": "phone", "lexicon": str(d / "lexicon.txt")})
    rng = np.random.default_rng(5)
    train_kneser_ney([utterance(rng, seed=500 + i)[1] for i in range(30)], order=2) \
        .write_arpa(d / "lm.arpa")
    return ckpt, d / "lm.arpa"


def training_utterance(k: int) -> tuple[np.ndarray, str]:
    """make_checkpoint's k-th training utterance: transcribed exactly by construction."""
    rng = np.random.default_rng(0)
    return [utterance(rng, seed=i) for i in range(k + 1)][k]


def test_phone_model_transcribes_phones_and_with_the_lm_words(phone_model, tmp_path):
    ckpt, lm = phone_model
    wave, text = max((training_utterance(k) for k in range(8)), key=lambda u: len(u[1]))
    rng = np.random.default_rng(9)
    phones = ctcasr.load(ckpt).transcribe(wave, SR)
    tok = ctcasr.load(ckpt).tokenizer
    assert phones.text == tok.reference(text) and len(phones.text.split()) >= 6
    words = ctcasr.load(ckpt, decoder="beam", lm=lm, lm_weight=0.5).transcribe(wave, SR)
    assert words.text == text
    assert [w.word for w in words.words] == text.split()
    assert all(a.start < b.start for a, b in itertools.pairwise(words.words))
    # the CLI: greedy scores phones against the references' phones (WER = phone error rate),
    # beam + LM scores words
    folder = tmp_path / "audio"
    folder.mkdir()
    rows = []
    for i in range(3):
        w, t = utterance(rng, seed=91 + i)
        sf.write(folder / f"u{i}.wav", w, SR)
        rows.append({"id": f"u{i}", "audio": str(folder / f"u{i}.wav"),
                     "duration": len(w) / SR, "text": t})
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for args, out in [((), "greedy"), (("--decoder", "beam", "--lm", lm, "--unk-penalty=-inf"),
                                        "lm")]:
        r = run("decode", "--checkpoint", ckpt, "--manifest", manifest, "--out-dir",
                tmp_path / out, *args)
        assert r.returncode == 0, r.stderr
        summary = json.loads((tmp_path / out / "summary.json").read_text())
        hyps = [line.split("\t")[1] for line in (tmp_path / out / "hyp.txt").read_text()
                .splitlines()]
        refs = [tok.reference(r["text"]) if out == "greedy" else r["text"] for r in rows]
        units = set(PHONES) if out == "greedy" else {"ab", "ba"}
        assert all(set(h.split()) <= units for h in hyps)
        assert summary["words"] == sum(len(w.split()) for w in refs)  # phones, or words
        assert summary["wer"] == pytest.approx(score(refs, hyps)[0].wer)
        assert summary["wer"] < 30  # (a model that learnt: 0-2 phones of ~24 wrong)


def test_phone_model_says_a_word_its_lm_lacks_from_the_word_list(phone_model, tmp_path):
    """An LM that knows only "ab": with the closed vocabulary every "ba" is lost (or turned
    into "ab"); with "ba" in a --vocab word list the model's words all come out, through the
    Python API and the CLI."""
    ckpt, _ = phone_model
    wave, text = max((training_utterance(k) for k in range(8)),
                     key=lambda u: min(u[1].split().count(w) for w in ("ab", "ba")))
    assert "ab" in text.split() and "ba" in text.split()
    lm = write(tmp_path, train_kneser_ney(["ab", "ab ab", "ab ab ab"], order=2))
    (tmp_path / "words.txt").write_text("ba 3\n")
    closed = ctcasr.load(ckpt, decoder="beam", lm=lm, unk_penalty=-math.inf)
    assert "ba" not in closed.transcribe(wave, SR).text.split()
    open_ = ctcasr.load(ckpt, decoder="beam", lm=lm, vocab=tmp_path / "words.txt")
    assert open_.transcribe(wave, SR).text == text
    sf.write(tmp_path / "u.wav", wave, SR)
    r = run("transcribe", ckpt, tmp_path / "u.wav", "--decoder", "beam", "--lm", lm,
            "--vocab", tmp_path / "words.txt")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().split("\t")[1] == text


@pytest.mark.skipif(not importlib.util.find_spec("onnxruntime"),
                    reason="onnxruntime not installed (pip install -e '.[onnx]')")
def test_phone_model_exports(phone_model, tmp_path):
    from ctcasr.infer.export import export

    ckpt, lm = phone_model
    out, diff = export(ckpt, "onnx", tmp_path / "phone.onnx")
    assert diff < 1e-4
    wave, text = training_utterance(3)
    onnx = ctcasr.load(out, decoder="beam", lm=lm)
    assert onnx.engine.kind == "onnx" and onnx.transcribe(wave, SR).text == text
