"""The soak benchmark's short mode (benchmarks/serve_soak.py): 30 s of 3 real-time streams,
connection churn and uploads against ``ctcasr serve`` in its own process: no errors, and the
server holds no more file descriptors or threads at the end than while it was busy."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO
from test_transcribe import trained_uni  # noqa: F401

pytest.importorskip("uvicorn")
pytest.importorskip("websockets")
if not sys.platform.startswith("linux"):
    pytest.skip("the soak reads /proc", allow_module_level=True)


def test_short_soak(trained_uni, monkeypatch):  # noqa: F811
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import serve_soak

    row = serve_soak.main(["--checkpoint", str(trained_uni), "--streams", "3", "--minutes",
                           "0.5", "--stream-seconds", "4", "--window-minutes", "0.2",
                           "--sample-seconds", "2"])
    assert row["error_count"] == 0, row["errors"]
    assert row["streams"] >= 6 and row["churned"] >= 30 and row["uploads"] >= 8, row
    # ~40 connections came and went after the warm-up: a leak of one each would show
    assert row["fds_end"] <= row["fds_warm"] + 4, row
    assert row["threads_end"] <= row["threads_warm"] + 2, row
