"""Hotwords: the context graph scores a label sequence as the listed phrases in it, and the
batched beam search with it finds what brute force over every CTC path finds."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from ctcasr.decode.beam import prefix_beam_search
from ctcasr.decode.context import ContextGraph, Hotword, read_hotwords
from ctcasr.errors import CtcasrError
from ctcasr.tokenizer import BLANK_ID, CharTokenizer


def naive_bonus(y: list[int], phrases: list[tuple[list[int], float]], start: list[int]) -> float:
    """The definition: every occurrence of every phrase (distinct token sequences), boost x
    length; ``start``: tokens read before the hypothesis."""
    seq = [*start, *y]
    best: dict[tuple[int, ...], float] = {}
    for ids, boost in phrases:
        best[tuple(ids)] = max(best.get(tuple(ids), 0.0), boost)
    total = 0.0
    for ids, boost in best.items():
        n = len(ids)
        total += sum(boost * n for i in range(len(seq) - n + 1) if tuple(seq[i : i + n]) == ids
                     and i + n > len(start))
    return total


def walk(graph: ContextGraph, y: list[int]) -> float:
    state = torch.tensor(graph.start)
    score = float(graph.unfinished(state))
    for t in y:
        state, delta = graph.step(state, torch.tensor(t))
        score += float(delta)
    return score - float(graph.unfinished(state))


@pytest.mark.parametrize("seed", range(5))
def test_the_graph_scores_every_occurrence_of_every_phrase(seed):
    rng = random.Random(seed)
    vocab = 5
    phrases = [([rng.randint(1, 4) for _ in range(rng.randint(1, 4))], rng.choice([1.0, 2.5]))
               for _ in range(4)]
    for start_token in (None, 1):
        graph = ContextGraph.from_token_phrases(phrases, vocab, start_token)
        start = [] if start_token is None or not graph.start else [start_token]
        for _ in range(40):
            y = [rng.randint(1, 4) for _ in range(rng.randint(0, 9))]
            assert walk(graph, y) == pytest.approx(naive_bonus(y, phrases, start)), (phrases, y)


def test_a_failed_partial_match_leaves_nothing_behind():
    graph = ContextGraph.from_token_phrases([([1, 2, 3], 2.0)], 5)
    state, score = torch.tensor(0), 0.0
    for t, want in ((1, 2.0), (2, 2.0), (4, -4.0)):  # matched 1 2, then it breaks off
        state, delta = graph.step(state, torch.tensor(t))
        assert float(delta) == want
        score += float(delta)
    assert int(state) == 0 and score == 0.0
    assert walk(graph, [1, 2]) == 0.0 and walk(graph, [1, 2, 3]) == 6.0


def brute_force(lp: torch.Tensor, phrases, start: list[int]) -> tuple[list[int], float]:
    """The best label sequence by CTC log-prob (summed over its paths) + hotword bonus."""
    t, v = lp.shape
    seqs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(v), repeat=t):
        labels, prev = [], BLANK_ID
        for k in path:
            if k != BLANK_ID and k != prev:
                labels.append(k)
            prev = k
        p = sum(float(lp[i, k]) for i, k in enumerate(path))
        key = tuple(labels)
        old = seqs.get(key, -math.inf)
        hi = max(old, p)
        seqs[key] = hi + math.log(math.exp(old - hi) + math.exp(p - hi))
    scored = {y: s + naive_bonus(list(y), phrases, start) for y, s in seqs.items()}
    best = max(scored, key=lambda y: scored[y])
    return list(best), scored[best]


@pytest.mark.parametrize("seed", range(4))
def test_beam_search_with_hotwords_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(5, 4, generator=g).mul(1.5).log_softmax(-1).double()
    phrases = [([1, 2], 1.5), ([3, 1, 2], 1.0), ([2], 0.7)]
    graph = ContextGraph.from_token_phrases(phrases, 4)
    want, score = brute_force(lp, phrases, [])
    (best, *_), = prefix_beam_search(lp[None], torch.tensor([5]), beam=200, topk=4,
                                     prune=math.inf, context=graph)
    assert best.tokens == want and best.score == pytest.approx(score, abs=1e-9)


def test_no_hotwords_changes_nothing():
    g = torch.Generator().manual_seed(7)
    lp = torch.randn(3, 30, 6, generator=g).log_softmax(-1)
    lens = torch.tensor([30, 22, 9])
    plain = prefix_beam_search(lp, lens, beam=8, nbest=3)
    empty = prefix_beam_search(lp, lens, beam=8, nbest=3,
                               context=ContextGraph.from_token_phrases([], 6))
    assert [[(h.tokens, h.score) for h in n] for n in plain] == \
        [[(h.tokens, h.score) for h in n] for n in empty]


def test_a_character_phrase_is_whole_words_and_matches_at_the_start():
    tok = CharTokenizer(list("eknorwy▁"))
    graph = ContextGraph.build([Hotword("new york", 1.0)], tok)
    assert graph.start != 0  # a word boundary read before the first word
    assert walk(graph, tok.encode("new york")) == 9.0  # ▁ n e w ▁ y o r k
    assert walk(graph, tok.encode("renew york")) == 0.0  # not the word "new"
    assert walk(graph, tok.encode("ok new york")) == 9.0
    with pytest.raises(CtcasrError, match="hotword 'café': the model cannot spell it"):
        ContextGraph.build([Hotword("café")], tok)


def test_hotword_files(tmp_path):
    f = tmp_path / "h.txt"
    f.write_text("# names\nNew  York\nkubernetes:3.5\nmy phrase\t0.5\n\n")
    assert read_hotwords(f) == [Hotword("new york", 2.0), Hotword("kubernetes", 3.5),
                                Hotword("my phrase", 0.5)]
    f.write_text("ok\nbad:lots\n")
    with pytest.raises(CtcasrError, match=r"h\.txt:2: the boost of 'bad' must be a number"):
        read_hotwords(f)
    f.write_text("zero:0\n")
    with pytest.raises(CtcasrError, match=r"h\.txt:1: expected 'phrase\[:boost\]'"):
        read_hotwords(f)
    f.write_text("# nothing\n")
    with pytest.raises(CtcasrError, match="has no phrases"):
        read_hotwords(f)


def spelled(tok: CharTokenizer, text: str, frames_per_token: int = 2) -> torch.Tensor:
    """Log-probs that say ``text`` clearly: each token for a few frames, blanks between."""
    ids = tok.encode(text)
    lp = torch.full((len(ids) * (frames_per_token + 1) + 1, tok.vocab_size), -8.0)
    lp[:, BLANK_ID] = -0.01
    for k, i in enumerate(ids):
        for f in range(frames_per_token):
            row = k * (frames_per_token + 1) + f
            lp[row] = -8.0
            lp[row, i] = -0.01
    return lp.log_softmax(-1)


def test_a_hotword_the_lm_lacks_is_admitted_without_the_oov_penalty():
    from ctcasr.decode import DecodeOptions, make_decoder
    from ctcasr.lm import train_kneser_ney

    tok = CharTokenizer(list("abcdkx▁"))
    lm = train_kneser_ney(["ab", "ab cd", "cd ab"], 2)
    lp = spelled(tok, "ab xkcd")
    lens = torch.tensor([lp.shape[0]])
    closed = DecodeOptions(beam=16, lm=lm, lm_weight=1.0, unk_penalty=-math.inf)
    plain = make_decoder("beam", closed, tok)(lp[None], lens)[0][0]
    assert tok.decode(plain.tokens) != "ab xkcd"  # only the LM's words may come out
    hot = DecodeOptions(beam=16, lm=lm, lm_weight=1.0, unk_penalty=-math.inf,
                        hotwords=(Hotword("xkcd", 2.0),))
    best = make_decoder("beam", hot, tok)(lp[None], lens)[0][0]
    assert tok.decode(best.tokens) == "ab xkcd"
    with pytest.raises(CtcasrError, match="--hotwords needs --decoder beam"):
        make_decoder("greedy", DecodeOptions(hotwords=(Hotword("xkcd"),)), tok)


def test_hotwords_through_the_api_and_per_call(tmp_path):
    from ctcasr.decode.settings import DecodeSettings, hotword_list

    assert hotword_list(["New York", "x"], 3.0) == (Hotword("new york", 3.0), Hotword("x", 3.0))
    f = tmp_path / "h.txt"
    f.write_text("alpha:1.5\n")
    assert hotword_list(f) == (Hotword("alpha", 1.5),)
    assert hotword_list(None) is None
    with pytest.raises(CtcasrError, match="expected phrases"):
        hotword_list([3])
    s = DecodeSettings().override(hotwords=hotword_list(["alpha"]))
    assert s.decoder == "beam" and s.describe() == "beam 10 + 1 hotword(s)"
    assert DecodeSettings().override(hotwords=()).decoder == "greedy"  # an empty list: no change
