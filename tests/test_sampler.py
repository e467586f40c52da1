import torch

from ctcasr.config import FbankConfig
from ctcasr.data.dataset import ASRDataset
from ctcasr.data.manifest import read_manifest
from ctcasr.data.sampler import BucketBatchSampler
from ctcasr.tokenizer import CharTokenizer

FRAMES = [50, 300, 120, 80, 610, 90, 200, 40, 1000, 75, 130, 260]


def test_batches_cover_everything_once_under_the_budget():
    s = BucketBatchSampler(FRAMES, max_frames=600, max_utts=3, shuffle=True, seed=1, sort_noise=0.1)
    for epoch in range(3):
        batches = s.batches(epoch)
        assert sorted(i for b in batches for i in b) == list(range(len(FRAMES)))
        for b in batches:
            assert len(b) <= 3
            assert len(b) == 1 or len(b) * max(FRAMES[i] for i in b) <= 600
    assert s.batches(0) == s.batches(0)  # a pure function of (seed, epoch)
    assert s.batches(0) != s.batches(1)  # reshuffled each epoch


def test_sort_noise_never_breaks_the_budget(caplog):
    """With jittered sorting a batch's longest member need not come last; the budget holds for
    every batch of two or more (the old check against the newcomer broke it by up to ~20 %)."""
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(2000, generator=g) * 1400 + 100).long().tolist() + [2500, 3000]
    with caplog.at_level("WARNING", logger="ctcasr.data.sampler"):
        s = BucketBatchSampler(frames, max_frames=2000, shuffle=True, seed=1, sort_noise=0.2)
    assert "2 utterance(s) longer than max_frames_per_batch (2000 frames, the longest 3000)" \
        in caplog.text
    for epoch in range(5):
        batches = s.batches(epoch)
        assert sorted(i for b in batches for i in b) == list(range(len(frames)))
        worst = max(len(b) * max(frames[i] for i in b) for b in batches if len(b) > 1)
        assert worst <= 2000
        assert sorted(b for b in batches if len(b) == 1 and frames[b[0]] > 2000) == [[2000], [2001]]
        # and the batches stay full: measured 1,190 batches against 1,126 without the jitter
        assert len(batches) <= 1.1 * len(BucketBatchSampler(frames, 2000).batches(0))


def test_eval_order_is_sorted_and_fixed():
    s = BucketBatchSampler(FRAMES, max_frames=600)
    flat = [i for b in s.batches(0) for i in b]
    assert [FRAMES[i] for i in flat] == sorted(FRAMES)
    assert s.batches(0) == s.batches(5)


def test_sortagrad_and_resume_position():
    s = BucketBatchSampler(FRAMES, 600, shuffle=True, seed=3, sortagrad_epochs=1)
    first = [max(FRAMES[i] for i in b) for b in s.batches(0)]
    assert first == sorted(first)
    s.set_epoch(1, start=2)
    assert list(s) == s.batches(1)[2:] and len(s) == len(s.batches(1)) - 2


def test_collate_pads_and_keeps_lengths(corpus):
    utts = read_manifest(corpus)
    tok = CharTokenizer.train(u.text for u in utts)
    ds = ASRDataset(utts, FbankConfig(sample_rate=8000, num_mel_bins=23), tok)
    items = [ds[i] for i in (0, 1, 2)]
    b = ds.collate(items)
    assert b.feats.shape == (3, max(f.shape[0] for _, f, _ in items), 23)
    assert b.feat_lens.tolist() == [f.shape[0] for _, f, _ in items]
    assert b.token_lens.tolist() == [len(tok.encode(utts[i].text)) for i in (0, 1, 2)]
    for k, (_, f, t) in enumerate(items):
        assert torch.equal(b.feats[k, : f.shape[0]], f)
        assert (b.feats[k, f.shape[0] :] == 0).all()
        assert torch.equal(b.tokens[k, : len(t)], t)
    assert b.ids == ["utt000", "utt001", "utt002"] and b.indices == [0, 1, 2]
    p = ds.collate(items, pad_to=64)  # more padding, nothing else
    assert p.feats.shape[1] % 64 == 0 and 0 < p.feats.shape[1] - b.feats.shape[1] < 64
    assert torch.equal(p.feats[:, : b.feats.shape[1]], b.feats)
    assert (p.feats[:, b.feats.shape[1] :] == 0).all()
    assert torch.equal(p.feat_lens, b.feat_lens) and torch.equal(p.tokens, b.tokens)


def test_padding_to_a_multiple_counts_in_the_budget():
    """Batches padded up to multiples of 64 frames keep ``max_frames`` with the padding."""
    frames = [100, 100, 100, 100, 30]
    assert [len(b) for b in BucketBatchSampler(frames, 400).batches(0)] == [4, 1]  # 4 x 100
    padded = BucketBatchSampler(frames, 400, pad_to=64).batches(0)  # 100 -> 128: 3 x 128
    assert [len(b) for b in padded] == [3, 2]  # [30, 100, 100] and [100, 100]: 3 x 128
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(500, generator=g) * 900 + 100).long().tolist()
    s = BucketBatchSampler(frames, 2000, shuffle=True, seed=1, sort_noise=0.1, pad_to=32)
    for b in s.batches(1):
        assert len(b) == 1 or len(b) * -(-max(frames[i] for i in b) // 32) * 32 <= 2000


def test_ranks_share_the_global_batches_without_overlap():
    kw = dict(max_frames=400, max_utts=3, shuffle=True, seed=3, sort_noise=0.1)
    one = BucketBatchSampler(FRAMES, **kw)
    ranks = [BucketBatchSampler(FRAMES, **kw, rank=r, world_size=2) for r in range(2)]
    for epoch in range(2):
        glob = ranks[0].batches(epoch)
        assert glob == one.batches(epoch)[: len(glob)]
        assert len(glob) % 2 == 0 and len(one.batches(epoch)) - len(glob) <= 1
        for r, s in enumerate(ranks):
            s.set_epoch(epoch, start=2)
            assert list(s) == glob[2:][r::2]
        assert len(ranks[0]) == len(ranks[1])
        assert not set(i for b in ranks[0] for i in b) & set(i for b in ranks[1] for i in b)


def test_tag_epoch_yields_keys():
    s = BucketBatchSampler(FRAMES, max_frames=600, tag_epoch=True)
    s.set_epoch(4)
    first = next(iter(s))
    assert all(isinstance(k, tuple) and k[0] == 4 for k in first)
