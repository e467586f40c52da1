import json

from ctcasr.scoring import score, write_report


def test_score_counts_and_report_files(tmp_path):
    ids = ["u1", "u2", "u3"]
    refs = ["yes no yes", "no no", None]
    hyps = ["yes no no", "no", "yes"]
    s = write_report(tmp_path, ids, refs, hyps, name="t")
    assert (s.substitutions, s.deletions, s.insertions, s.words) == (1, 1, 0, 5)
    assert s.wer == 40.0 and s.utterances == 2 and s.sentence_errors == 2
    assert (tmp_path / "hyp.txt").read_text() == "u1\tyes no no\nu2\tno\nu3\tyes\n"
    errors = (tmp_path / "errors.txt").read_text()
    assert "u1\nREF: yes no yes\nHYP: yes no no\n            S\n" in errors
    assert "u2\nREF: no no\nHYP: no **\n        D\n" in errors
    assert "u3" not in errors
    assert json.loads((tmp_path / "summary.json").read_text())["wer"] == 40.0
    assert "WER 40.00 % [ 2 / 5" in (tmp_path / "summary.txt").read_text()


def test_confusions_and_cer():
    s, _ = score(["a b c", "a b"], ["a x c", "a x"])
    assert s.confusions == [("b", "x", 2)]
    assert s.cer == 100 * 2 / 8
