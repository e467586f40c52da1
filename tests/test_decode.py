import math

import pytest
import torch

from ctcasr.decode import DecodeOptions, greedy_search, make_decoder
from ctcasr.errors import CtcasrError
from ctcasr.tokenizer import CharTokenizer


def log_probs_from_path(path, vocab=4, p=0.9):
    lp = torch.full((len(path), vocab), math.log((1 - p) / (vocab - 1)))
    for t, k in enumerate(path):
        lp[t, k] = math.log(p)
    return lp


def test_greedy_merges_repeats_and_drops_blanks():
    paths = [
        [0, 1, 1, 0, 1, 2, 2, 2, 0, 0, 3],  # a a (blank between) then b, c
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [0] * 11,
        [2, 0, 2, 2, 0, 0, 3, 3, 1, 3, 3],
    ]
    lp = torch.stack([log_probs_from_path(p) for p in paths])
    lens = torch.tensor([11, 11, 11, 9])
    hyps = greedy_search(lp, lens)
    assert [h[0].tokens for h in hyps] == [[1, 1, 2, 3], [1], [], [2, 2, 3, 1]]
    assert hyps[0][0].frames == [1, 4, 5, 10]
    assert hyps[3][0].frames == [0, 2, 6, 8]  # frames beyond the length are ignored
    assert math.isclose(hyps[1][0].score, 11 * math.log(0.9), rel_tol=1e-5)
    tok = CharTokenizer(["a", "b", "c"])
    assert make_decoder("greedy", DecodeOptions(), tok) is greedy_search
    beam = make_decoder("beam", DecodeOptions(beam=4), tok)
    assert [h[0].tokens for h in beam(lp, lens)] == [h[0].tokens for h in hyps]
    with pytest.raises(CtcasrError, match="unknown decoder 'viterbi'"):
        make_decoder("viterbi", DecodeOptions(), tok)


def test_word_times_from_forced_alignment():
    from ctcasr.decode.timestamps import word_times

    tok = CharTokenizer(["a", "b", "▁"])  # ids: a=1, b=2, ▁=3
    # frames: blank a a blank ▁ blank b b b blank
    path = [0, 1, 1, 0, 3, 0, 2, 2, 2, 0]
    lp = log_probs_from_path(path, vocab=4, p=0.97)
    words = word_times(lp, [1, 3, 2], tok, frame_s=0.04)
    assert [w.word for w in words] == ["a", "b"]
    assert words[0].start == pytest.approx(0.04) and words[0].end == pytest.approx(0.12)
    assert words[1].start == pytest.approx(0.24) and words[1].end == pytest.approx(0.36)
    assert all(0.9 < w.confidence <= 1.0 for w in words)
    assert word_times(lp, [], tok, 0.04) == []
