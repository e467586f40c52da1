"""ctcasr.data.download.fetch: the recipes' download stage, with file:// URLs (no network)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile

import pytest

from ctcasr.data.download import fetch
from ctcasr.errors import CtcasrError


def make_archive(tmp_path, kind="tar.gz"):
    src = tmp_path / "src" / "corpus"
    src.mkdir(parents=True)
    (src / "a.txt").write_text("hello\n")
    archive = tmp_path / f"corpus.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            z.write(src / "a.txt", "corpus/a.txt")
    else:
        with tarfile.open(archive, "w:gz") as t:
            t.add(src, "corpus")
    return archive


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_fetch_downloads_unpacks_once(tmp_path, kind):
    archive = make_archive(tmp_path, kind)
    dest = tmp_path / "dest"
    # the first URL fails (no such file), the mirror answers
    assert fetch([(tmp_path / "gone.tar.gz").as_uri(), archive.as_uri()], dest,
                 name=archive.name) == dest
    assert (dest / "corpus" / "a.txt").read_text() == "hello\n"
    assert (dest / archive.name).is_file() and not (dest / f"{archive.name}.part").exists()
    archive.unlink()  # done before: neither fetched nor unpacked again
    (dest / "corpus" / "a.txt").write_text("edited\n")
    fetch(archive.as_uri(), dest)
    assert (dest / "corpus" / "a.txt").read_text() == "edited\n"


def test_fetch_errors(tmp_path):
    with pytest.raises(CtcasrError, match=r"could not download the thing \(file:.*gone\.tar\.gz"
                                          r": .*\): without the network, put the corpus in a "
                                          "folder and pass that folder"):
        fetch((tmp_path / "gone.tar.gz").as_uri(), tmp_path / "d", "the thing")
    # a broken archive (a download cut short by something else) names itself and the remedy
    broken = tmp_path / "d" / "x.tar.gz"
    broken.write_bytes(make_archive(tmp_path).read_bytes()[:100])
    with pytest.raises(CtcasrError, match=r"x\.tar\.gz: cannot unpack it .*delete it to "
                                          "download it again"):
        fetch("https://example.invalid/x.tar.gz", tmp_path / "d")
    # offline from the command line: one line, no traceback
    r = subprocess.run([sys.executable, "-m", "ctcasr.data.download", "--dest", str(tmp_path / "e"),
                        (tmp_path / "nope.zip").as_uri()], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("downloading")
    assert r.stderr.strip().splitlines()[-1].startswith("error: could not download the corpus")
    assert "Traceback" not in r.stderr
