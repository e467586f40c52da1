"""Issue 6, point 7: the guarantees are documented (docs/reliability.md, linked from README.md),
and the document points at the tests that hold them."""

import re

from conftest import REPO

from tests.test_cli import run_cli


def test_reliability_doc_is_linked_and_cites_existing_tests():
    assert "(docs/reliability.md)" in (REPO / "README.md").read_text()
    doc = (REPO / "docs" / "reliability.md").read_text()
    cited = set(re.findall(r"test_reliability_\w+\.py", doc))
    on_disk = {p.name for p in (REPO / "tests").glob("test_reliability_*.py")}
    assert cited == on_disk
    for topic in ("kill -9", "--resume", "No space left on device", "--skip-bad", "skipped.txt",
                  "DataLoader workers", "max_bad_steps", "peak RSS", "weights_only=True",
                  "yaml.safe_load", "benchmarks/decode_memory.py"):
        assert topic in doc, topic


def test_skip_bad_is_an_option_of_train_and_decode(capsys, monkeypatch):
    for verb in ("train", "decode"):
        code, out, _ = run_cli([verb, "--help"], capsys, monkeypatch)
        assert code == 0 and "--skip-bad" in out
