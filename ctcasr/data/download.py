"""Corpora the recipes use, found locally or fetched from their upstream homes, once.

    ctcasr download NAME            # prints the corpus's folder, downloading it if needed
    python -m ctcasr.data.download --dest DIR URL [URL ...]     # any archive

:func:`corpus_dir` finds corpus ``NAME`` (one of :data:`CORPORA`) in this order:

1. ``$CTCASR_DATA/NAME``: a folder of local copies (``fsdd/``, ``speechocean762/``,
   ``arctic/``, ``yesno/``), for machines without the network or corpora kept elsewhere;
2. ``$CTCASR_DOWNLOADS/NAME`` (default ``~/.cache/ctcasr/corpora/NAME``) when a download there
   completed before;
3. otherwise the archive is downloaded there (the first URL that answers; ``CTCASR_MIRROR=URL``
   replaces each URL's scheme and host, for a mirror of the same paths) and unpacked.

A download goes to ``NAME.part`` and is renamed only when complete; an interrupted one resumes
where it stopped (an HTTP range request) when the server allows it. Its SHA-256 is checked when
the corpus has a published one, and written beside the archive (``ARCHIVE.sha256``) in any case.
Tar members are filtered as data (no absolute paths, links out of the folder or devices);
``ARCHIVE.done`` marks a finished unpack, so a second call does nothing. A machine without the
network gets one line naming the folder to put a copy in, not a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ctcasr.errors import CtcasrError

DATA_ENV, DOWNLOADS_ENV, MIRROR_ENV = "CTCASR_DATA", "CTCASR_DOWNLOADS", "CTCASR_MIRROR"


@dataclass(frozen=True)
class Corpus:
    what: str  # its name in messages
    urls: tuple[str, ...]  # the archive, then mirrors
    archive: str  # the archive's file name
    sha256: str | None = None  # when upstream's bytes are known to be fixed


_SLR = ("https://www.openslr.org", "https://us.openslr.org", "https://openslr.elda.org")
_CATHY = "https://github.com/rhasspy/dataset-voice-cathy/archive/refs/heads"
CORPORA: dict[str, Corpus] = {
    "yesno": Corpus("yesno", tuple(f"{h}/resources/1/waves_yesno.tar.gz" for h in _SLR),
                    "waves_yesno.tar.gz",
                    "30301975fd8c5cac4040c261c0852f57cfa8adbbad2ce78e77e4986957445f27"),
    "fsdd": Corpus("the Free Spoken Digit Dataset (v1.0.10)",
                   ("https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/"
                    "v1.0.10.tar.gz",), "fsdd.tar.gz"),
    "speechocean762": Corpus("speechocean762",
                             tuple(f"{h}/resources/101/speechocean762.tar.gz" for h in _SLR),
                             "speechocean762.tar.gz"),
    "arctic": Corpus("CMU ARCTIC (rhasspy dataset-voice-cathy)",
                     (f"{_CATHY}/master.tar.gz", f"{_CATHY}/main.tar.gz"), "cathy.tar.gz"),
}


def downloads_root() -> Path:
    return Path(os.environ.get(DOWNLOADS_ENV) or Path.home() / ".cache" / "ctcasr" / "corpora")


def corpus_dir(name: str, given: str | Path | None = None) -> Path:
    """The folder of corpus ``name``: ``given`` when it is a folder (``None`` or ``download``:
    look for a local copy, else download; see the module doc)."""
    if name not in CORPORA:
        raise CtcasrError(f"unknown corpus {name!r} (known: {', '.join(CORPORA)})")
    if given is not None and str(given) != "download":
        if not Path(given).is_dir():
            raise CtcasrError(f"{given}: no such folder (the {CORPORA[name].what} corpus)")
        return Path(given)
    local = os.environ.get(DATA_ENV)
    if local and (Path(local) / name).is_dir():
        return Path(local) / name
    c = CORPORA[name]
    dest = downloads_root() / name
    where = f"{local}/{name}" if local else f"DIR/{name} and set {DATA_ENV}=DIR"
    fetch(c.urls, dest, c.what, c.archive, c.sha256, instead=f"put a copy in {where}")
    return _top(dest)


def _top(dest: Path) -> Path:
    """The corpus inside an unpacked archive: its one top folder, if it has one."""
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")
               and not p.name.endswith((".done", ".sha256", ".part"))
               and not (p.is_file() and p.suffix in (".gz", ".tar", ".zip", ".tgz"))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def mirrored(url: str) -> str:
    """``url`` on the mirror that ``$CTCASR_MIRROR`` names (unchanged without one)."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror or url.startswith("file:"):
        return url
    return mirror.rstrip("/") + urllib.parse.urlsplit(url).path


def fetch(urls: str | Sequence[str], dest: str | Path, what: str = "the corpus",
          name: str | None = None, sha256: str | None = None,
          instead: str = "put the corpus in a folder and pass that folder") -> Path:
    """Download (the first of) ``urls`` into ``dest`` as ``name`` (default: the URL's last
    part) and unpack it there, unless done before; returns ``dest``. Raises
    :class:`CtcasrError` when no URL can be fetched (``instead``: what to do without the
    network), the checksum differs, or the archive cannot be unpacked."""
    urls = [mirrored(u) for u in ([urls] if isinstance(urls, str) else urls)]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / Path(name or urllib.request.url2pathname(urls[0].rsplit("/", 1)[-1])).name
    done = archive.with_name(archive.name + ".done")
    if done.exists():
        return dest
    if not archive.exists():
        errors = []
        for url in urls:
            try:
                _download(url, archive)
                break
            except (OSError, urllib.error.URLError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
        else:
            raise CtcasrError(f"could not download {what} ({'; '.join(errors)}): without the "
                              f"network, {instead}")
        _check_sum(archive, sha256)
    _unpack(archive, dest)
    done.touch()
    return dest


def _download(url: str, archive: Path) -> None:
    from tqdm import tqdm

    part = archive.with_name(archive.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    print(f"downloading {url}" + (f" (resuming at {have} bytes)" if have else ""),
          file=sys.stderr)
    with urllib.request.urlopen(request, timeout=60) as r:
        if have and r.status != 206:  # the server sends it all again
            have = 0
        size = int(r.headers.get("Content-Length") or 0) or None
        with part.open("ab" if have else "wb") as f, \
                tqdm(total=size and size + have, initial=have, unit="B", unit_scale=True,
                     disable=None, file=sys.stderr) as bar:
            while chunk := r.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    if size is not None and part.stat().st_size != size + have:
        raise OSError(f"the connection closed after {part.stat().st_size} of {size + have} "
                      "bytes (run again to resume)")
    part.rename(archive)


def _check_sum(archive: Path, expected: str | None) -> None:
    h = hashlib.sha256()
    with archive.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    digest = h.hexdigest()
    if expected and digest != expected:
        bad = archive.with_name(archive.name + ".bad")
        archive.replace(bad)
        raise CtcasrError(f"{archive}: SHA-256 {digest}, expected {expected} (kept as {bad.name}"
                          "; run again to download it afresh)")
    archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n")


def _unpack(archive: Path, dest: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(dest)  # zipfile keeps members inside dest
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise CtcasrError(f"{archive}: cannot unpack it ({e}); delete it to download it "
                          "again") from None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("urls", nargs="+", help="the archive's URL, then mirrors")
    ap.add_argument("--dest", type=Path, required=True, help="folder to unpack into")
    ap.add_argument("--what", default="the corpus", help="its name, for messages")
    args = ap.parse_args(argv)
    try:
        fetch(args.urls, args.dest, args.what)
    except CtcasrError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
