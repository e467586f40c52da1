"""Fetch a corpus archive and unpack it, once: what every recipe's "download" stage does.

    python -m ctcasr.data.download --dest DIR URL [URL ...]

The first URL that answers is saved to ``DIR/NAME.part`` and renamed to ``DIR/NAME`` only when
complete, so an interrupted download is started again rather than unpacked half; an archive
that is there is not fetched again. It is unpacked into ``DIR`` (tar, tar.gz, zip; tar members
are filtered as data: no absolute paths, links out of ``DIR`` or devices) and ``DIR/NAME.done``
marks that, so a second call does nothing. A machine without the network gets one line saying so
and what to do instead, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

from ctcasr.errors import CtcasrError


def fetch(urls: str | Sequence[str], dest: str | Path, what: str = "the corpus",
          name: str | None = None) -> Path:
    """Download (the first of) ``urls`` into ``dest`` as ``name`` (default: the URL's last
    part) and unpack it there, unless done before; returns ``dest``. Raises
    :class:`CtcasrError` when no URL can be fetched or the archive cannot be unpacked."""
    urls = [urls] if isinstance(urls, str) else list(urls)
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
                              "network, put the corpus in a folder and pass that folder")
    _unpack(archive, dest)
    done.touch()
    return dest


def _download(url: str, archive: Path) -> None:
    from tqdm import tqdm

    part = archive.with_name(archive.name + ".part")
    print(f"downloading {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=60) as r, part.open("wb") as f:
        size = int(r.headers.get("Content-Length") or 0) or None
        with tqdm(total=size, unit="B", unit_scale=True, disable=None, file=sys.stderr) as bar:
            while chunk := r.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    part.rename(archive)


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
