"""``ctcasr realign``: each word token's pronunciation chosen among the lexicon's variants by a
phone model's CTC likelihood, written as ``word(N)``, which the phone tokenizer trains."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from test_phones import LEXICON, ctc_logp, phone_model  # noqa: F401 (a fixture)
from test_transcribe import SR

from ctcasr.checkpoint import load_checkpoint, save_checkpoint
from ctcasr.infer.realign import choose, marked
from ctcasr.lexicon import Lexicon, variant_of
from ctcasr.tokenizer import PhoneTokenizer


@pytest.fixture
def tok(tmp_path):
    (tmp_path / "lex.txt").write_text(LEXICON + "tomato T AH M EY T OW\n"
                                      "tomato(2) T AH M AA T OW\na AH\na(2) EY\n")
    return PhoneTokenizer(Lexicon.read(tmp_path / "lex.txt"))


def test_marked_variants_are_trained_with_their_pronunciation(tok):
    assert variant_of("ba(2)") == ("ba", 1) and variant_of("ba") == ("ba", 0)
    assert variant_of("(2)") == ("(2)", 0)
    assert tok.reference("ba cat") == "B AA K AE T"
    assert tok.reference("ba(2) cat") == "B AH K AE T"
    assert tok.reference("ba(1)") == "B AA"
    with pytest.raises(ValueError, match=r"'ba\(3\)': .* has 2 pronunciation\(s\) of 'ba'"):
        tok.encode("ba(3)")
    assert marked(["a", "ba", "cat"], [1, 0, 0]) == ["a(2)", "ba", "cat"]


def peaked(tok: PhoneTokenizer, text: str, seed: int, noise: float = 2.0) -> torch.Tensor:
    """Log-probs favouring the phones of ``text`` (each phone 2 frames, a blank after)."""
    frames = []
    for t in tok.encode(text):
        frames += [t, t, 0]
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(len(frames), tok.vocab_size, generator=g) * noise
    lp[torch.arange(len(frames)), torch.tensor(frames)] += 6
    return lp.log_softmax(-1)


@pytest.mark.parametrize("seed", range(4))
def test_the_said_variants_are_chosen_as_brute_force_would(tok, seed):
    words = ["a", "tomato", "ba", "to", "a"]
    g = torch.Generator().manual_seed(100 + seed)
    said = [int(torch.randint(len(tok.lexicon.pronounce(w)), (1,), generator=g)) for w in words]
    lp = peaked(tok, " ".join(marked(words, said)), seed)
    got = choose(lp, words, tok)
    assert got == said

    def score(choice) -> float:
        return ctc_logp(lp, tok.encode(" ".join(marked(words, list(choice)))))

    best = max(itertools.product(*(range(len(tok.lexicon.pronounce(w))) for w in words)),
               key=score)
    assert got == list(best)


def test_a_tie_keeps_the_first_variant_and_a_marked_word_starts_from_its_mark(tok):
    lp = torch.zeros(12, tok.vocab_size).log_softmax(-1)  # every path equally likely
    assert choose(lp, ["a", "tomato", "cat"], tok) == [0, 0, 0]
    lp = peaked(tok, "a(2) cat", seed=1)
    assert choose(lp, ["a", "cat"], tok) == [1, 0]
    assert choose(lp, ["a(2)", "cat"], tok) == [1, 0]


def test_realign_cli_marks_what_the_model_says(phone_model, tmp_path, capsys,  # noqa: F811
                                               monkeypatch):
    """The tiny phone model learned ``ba`` as B AA. Given a lexicon whose first ``ba`` is B IY
    and second B AA, realign marks every ``ba`` as ``ba(2)``; ``ab`` (one pronunciation) stays;
    the manifest's other fields stay, its audio paths resolve from the new folder."""
    from test_cli import run_cli
    from test_phones import training_utterance

    from ctcasr.data.manifest import read_manifest

    ckpt, _ = phone_model
    state = load_checkpoint(ckpt)
    state["tokenizer"] = {**state["tokenizer"],
                          "entries": {"ab": ["AE B"], "ba": ["B IY", "B AA"]}}
    relexed = tmp_path / "relexed.pt"
    save_checkpoint(state, relexed)
    lines = []
    (tmp_path / "wav").mkdir()
    for k in range(6):
        wave, text = training_utterance(k)
        sf.write(tmp_path / "wav" / f"u{k}.wav", wave.astype(np.float32), SR)
        lines.append({"id": f"u{k}", "audio": f"wav/u{k}.wav", "duration": len(wave) / SR,
                      "text": text, "speaker": "s1"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out" / "realigned.jsonl"
    code, stdout, err = run_cli(["realign", relexed, manifest, "-o", out], capsys, monkeypatch)
    assert code == 0, err
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [g["id"] for g in got] == [x["id"] for x in lines]
    n_ba = 0
    for g, x in zip(got, lines, strict=True):
        assert g["speaker"] == "s1" and g["duration"] == x["duration"]
        want = " ".join("ba(2)" if w == "ba" else w for w in x["text"].split())
        assert g["text"] == want
        n_ba += x["text"].split().count("ba")
    assert n_ba > 0
    assert [u.audio.resolve() for u in read_manifest(out)] == \
        [(tmp_path / x["audio"]).resolve() for x in lines]
    assert f"{n_ba} given another than the first" in err and "ba: B IY -> B AA" in err
    # a character model cannot choose pronunciations: one line
    from test_transcribe import make_checkpoint

    chars = make_checkpoint(tmp_path / "c.pt", "lstm")
    code, _, err = run_cli(["realign", chars, manifest, "-o", out], capsys, monkeypatch)
    assert code != 0 and "needs a phone model" in err
