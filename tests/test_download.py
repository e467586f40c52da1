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


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path):
    from upstream import serve

    data = make_archive(tmp_path).read_bytes()
    with serve({"/c.tar.gz": data}, cut={"/c.tar.gz": len(data) // 2}) as (url, log):
        with pytest.raises(CtcasrError, match=rf"closed after {len(data) // 2} of {len(data)} "
                                              r"bytes \(run again to resume\)"):
            fetch(f"{url}/c.tar.gz", tmp_path / "d")
        part = tmp_path / "d" / "c.tar.gz.part"
        assert part.stat().st_size == len(data) // 2
        fetch(f"{url}/c.tar.gz", tmp_path / "d")
    assert log == [("/c.tar.gz", ""), ("/c.tar.gz", f"bytes={len(data) // 2}-")]
    assert (tmp_path / "d" / "c.tar.gz").read_bytes() == data
    assert (tmp_path / "d" / "corpus" / "a.txt").read_text() == "hello\n"


def test_a_checksum_that_differs_is_refused_and_the_archive_set_aside(tmp_path):
    import hashlib

    archive = make_archive(tmp_path)
    good = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(CtcasrError, match=r"c\.tar\.gz: SHA-256 [0-9a-f]{64}, expected 0+ "
                                          r"\(kept as c\.tar\.gz\.bad; run again"):
        fetch(archive.as_uri(), tmp_path / "d", name="c.tar.gz", sha256="0" * 64)
    assert not (tmp_path / "d" / "corpus").exists()
    fetch(archive.as_uri(), tmp_path / "d", name="c.tar.gz", sha256=good)
    assert (tmp_path / "d" / "c.tar.gz.sha256").read_text() == f"{good}  c.tar.gz\n"


def test_corpus_dir_prefers_a_local_copy_then_a_finished_download(tmp_path, monkeypatch):
    from upstream import serve

    from ctcasr.data import download

    monkeypatch.setenv("CTCASR_DATA", str(tmp_path / "local"))
    monkeypatch.setenv("CTCASR_DOWNLOADS", str(tmp_path / "cache"))
    (tmp_path / "local" / "fsdd").mkdir(parents=True)
    assert download.corpus_dir("fsdd") == tmp_path / "local" / "fsdd"
    assert download.corpus_dir("fsdd", tmp_path) == tmp_path  # a folder given wins
    with pytest.raises(CtcasrError, match="nope: no such folder"):
        download.corpus_dir("fsdd", tmp_path / "nope")
    with pytest.raises(CtcasrError, match="unknown corpus 'timit'"):
        download.corpus_dir("timit")
    # not local: fetched from the mirror (the upstream path on another host), unpacked, and
    # its one top folder returned; a second call finds it without the network
    data = make_archive(tmp_path).read_bytes()
    path = "/resources/101/speechocean762.tar.gz"
    with serve({path: data}) as (url, log):
        monkeypatch.setenv("CTCASR_MIRROR", url)
        assert download.corpus_dir("speechocean762") == tmp_path / "cache/speechocean762/corpus"
    assert [p for p, _ in log] == [path]
    monkeypatch.setenv("CTCASR_MIRROR", "http://127.0.0.1:9")  # nothing listens there
    assert download.corpus_dir("speechocean762") == tmp_path / "cache/speechocean762/corpus"
    # offline, nothing local: one line naming where a copy goes
    with pytest.raises(CtcasrError, match=r"could not download yesno .*without the network, put "
                                          r"a copy in .*/local/yesno"):
        download.corpus_dir("yesno")
