import math

import torch

from ctcasr.decode import get_decoder, greedy_search


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
    assert get_decoder("greedy") is greedy_search
