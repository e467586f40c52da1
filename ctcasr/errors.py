"""The one exception type users see.

Every problem caused by user input (a manifest line, an audio file, a config key, a checkpoint)
raises :class:`CtcasrError` with a message that names the file (and line) and what is wrong.
The CLI prints that message on one line and exits with status 1; nothing else is caught.
"""

from __future__ import annotations

from pathlib import Path


class CtcasrError(Exception):
    """A user-facing error: the message alone must tell what to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(_unwrap_worker_message(message))


def first_line(e: Exception) -> str:
    """The first line of an exception's message (library messages can run to pages)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def read_lines(path: str | Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file; a file that cannot be read or decoded is a
    :class:`CtcasrError` naming it (``what``: the kind of file, for the message)."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise CtcasrError(f"{path}: cannot read {what}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise CtcasrError(f"{path}: {what} is not UTF-8 ({e.reason})") from None


def _unwrap_worker_message(message: str) -> str:
    """Undo the traceback wrapping that DataLoader workers put around an exception.

    ``torch.utils.data`` re-raises a worker's exception in the main process as
    ``type(exc)("Caught X in DataLoader worker process N.\\nOriginal Traceback ...")``; the
    user-facing text is the last line, after ``module.CtcasrError: ``.
    """
    if not message.startswith("Caught ") or "Original Traceback" not in message:
        return message
    last = message.rstrip().splitlines()[-1]
    _, sep, text = last.partition("Error: ")
    return text if sep else last
