"""Word edges moved to the audio's pauses (``ctcasr.decode.pauses``): on tone bursts with known
edges, a word's spike-wide span grows (or shrinks) to exactly where its sound is; words with no
pause between them meet; what is not a pause (a short closure, a recording that never pauses)
moves nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_transcribe import trained  # noqa: F401 (a fixture)

from ctcasr.decode.align import AlignedWord, Span
from ctcasr.decode.pauses import Snap, frame_db, pauses, snap

SR = 16000


def audio(*pieces: tuple[float, float]) -> torch.Tensor:
    """Pieces of (seconds, amplitude): a 300 Hz tone, or low noise where amplitude is 0."""
    rng = np.random.default_rng(0)
    out = []
    for seconds, amp in pieces:
        n = round(seconds * SR)
        t = np.arange(n) / SR
        out.append(amp * np.sin(2 * np.pi * 300 * t) if amp else 1e-4 * rng.standard_normal(n))
    return torch.from_numpy(np.concatenate(out).astype(np.float32))


def word(text: str, start: float, end: float) -> AlignedWord:
    """A word as CTC alignment gives it: two units, each a one-frame spike."""
    units = [Span(text[0], start, start + 0.04, 0.9), Span(text[1:], end - 0.04, end, 0.8)]
    return AlignedWord(text, start, end, 0.85, units)


def edges(words: list[AlignedWord]) -> list[tuple[float, float]]:
    return [(round(w.start, 3), round(w.end, 3)) for w in words]


def test_levels_and_pauses():
    db = frame_db(audio((0.1, 0), (0.2, 0.5), (0.02, 0), (0.2, 0.5), (0.05, 0), (0.1, 0.5)), SR)
    assert db.shape == (67,)
    assert db[:10].max() < -70 and db[10:30].min() > -10  # noise ~ -80 dB, tone ~ -9 dB
    # a pause at the start (any length), the 50 ms one; the 20 ms closure is not a pause
    assert pauses(db) == [(0, 10), (52, 57)]
    assert pauses(db, Snap(min_pause_s=0.01)) == [(0, 10), (30, 32), (52, 57)]
    assert pauses(torch.full((50,), -20.0)) == []  # one level: nothing stands out of it
    assert pauses(torch.empty(0)) == []


def test_word_edges_move_to_the_sound():
    # sound at 0.3-0.7 s and 1.0-1.5 s; the spikes: late start and early end for the first,
    # a start before the sound (a bidirectional model firing early) for the second
    wave = audio((0.3, 0), (0.4, 0.5), (0.3, 0), (0.5, 0.5), (0.3, 0))
    words = [word("one", 0.36, 0.52), word("two", 0.92, 1.2)]
    got = snap(words, frame_db(wave, SR))
    assert edges(got) == [(0.3, 0.7), (1.0, 1.5)]
    for w in got:  # the units stay inside the word, the first and last at its edges
        assert w.units[0].start == w.start and w.units[-1].end == w.end
        assert all(w.start <= u.start <= u.end <= w.end for u in w.units)
    assert edges(words) == [(0.36, 0.52), (0.92, 1.2)]  # the input is left as it was


def test_words_with_no_pause_between_them_meet():
    wave = audio((0.2, 0), (1.0, 0.5), (0.2, 0))
    got = snap([word("one", 0.3, 0.5), word("two", 0.7, 1.0)], frame_db(wave, SR))
    assert edges(got) == [(0.2, 0.7), (0.7, 1.2)]


def test_what_lies_between_two_pauses_is_neither_word():
    # a cough (0.9-1.1 s) between the words, a pause on either side of it
    wave = audio((0.2, 0), (0.4, 0.5), (0.3, 0), (0.2, 0.5), (0.3, 0), (0.4, 0.5), (0.2, 0))
    got = snap([word("one", 0.3, 0.5), word("two", 1.5, 1.7)], frame_db(wave, SR))
    assert edges(got) == [(0.2, 0.6), (1.4, 1.8)]


def test_a_short_closure_inside_a_word_is_not_a_pause():
    # the word's sound has a 20 ms gap (a stop's closure) after its last spike
    wave = audio((0.2, 0), (0.3, 0.5), (0.02, 0), (0.1, 0.5), (0.3, 0))
    got = snap([word("six", 0.25, 0.45)], frame_db(wave, SR))
    assert edges(got) == [(0.2, 0.62)]


@pytest.mark.parametrize("level", [0.5, 0.0])
def test_nothing_moves_without_a_pause_to_move_to(level):
    # one steady level throughout, loud or quiet: the words keep the model's spans
    wave = audio((1.0, level))
    words = [word("one", 0.3, 0.5), word("two", 0.6, 0.8)]
    assert edges(snap(words, frame_db(wave, SR))) == edges(words)
    assert snap([], frame_db(wave, SR)) == []


def test_a_word_inside_a_pause_keeps_its_span():
    # the model put the second word where the audio is quiet: it is not stretched or cut
    wave = audio((0.2, 0), (0.4, 0.5), (0.6, 0))
    got = snap([word("one", 0.3, 0.5), word("two", 0.8, 1.0)], frame_db(wave, SR))
    assert edges(got) == [(0.2, 0.6), (0.8, 1.0)]


def test_transcribe_snaps_recognised_words_to_the_pauses(trained, tmp_path):  # noqa: F811
    """``ctcasr transcribe --json --snap``: the tiny trained model's words on its own training
    utterances (tone words between digital silences), each edge within a level frame of
    where its tone starts and stops; without --snap the edges are the model's frames."""
    import json

    import soundfile as sf
    from test_transcribe import SR as MODEL_SR
    from test_transcribe import run, utterance

    from ctcasr.decode.pauses import HOP_S

    model = trained
    rng = np.random.default_rng(0)
    files, truth = [], []
    for k in range(4):
        wave, text = utterance(rng, seed=k)  # make_checkpoint's first training utterances
        path = tmp_path / f"u{k}.wav"
        sf.write(path, wave, MODEL_SR)
        files.append(path)
        loud = np.flatnonzero(np.diff(np.concatenate([[0], wave != 0, [0]]).astype(int)))
        truth.append([(a / MODEL_SR, b / MODEL_SR) for a, b in zip(loud[::2], loud[1::2],
                                                                   strict=True)])
        assert len(truth[-1]) == len(text.split())
    for snapped in (True, False):
        r = run("transcribe", model, *files, "--json", *(["--snap"] if snapped else []))
        assert r.returncode == 0, r.stderr
        got = [[(w["start"], w["end"]) for w in json.loads(x)["words"]]
               for x in r.stdout.splitlines()]
        assert [len(g) for g in got] == [len(t) for t in truth]
        worst = max(max(abs(a - c), abs(b - d)) for g, t in zip(got, truth, strict=True)
                    for (a, b), (c, d) in zip(g, t, strict=True))
        if snapped:
            assert worst <= HOP_S + 0.002, got
        else:  # the model's frames (40 ms each): its spans are not the tones' edges
            assert worst > 2 * HOP_S, got
