"""Bad inputs: an error by default, skipped and listed under ``--skip-bad``.

Every check on an input (manifest line, audio file, transcript) raises :class:`CtcasrError`
with a message naming the file and manifest line. Code that meets a bad input hands that error
to a :class:`BadInputs`: without ``--skip-bad`` it is raised (the run stops with that one line);
with it the utterance is left out, and :meth:`BadInputs.report` lists every one at the end of
the run and in ``skipped.txt``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ctcasr.errors import CtcasrError

log = logging.getLogger("ctcasr")


class BadInputs:
    def __init__(self, skip: bool = False) -> None:
        self.skip = skip
        self.messages: list[str] = []

    def skip_or_raise(self, error: CtcasrError | str) -> None:
        """Raise ``error``, or under ``--skip-bad`` record it (the caller leaves the input out)."""
        if not self.skip:
            raise error if isinstance(error, CtcasrError) else CtcasrError(error)
        self.messages.append(str(error))

    @property
    def count(self) -> int:
        return len(self.messages)

    def report(self, path: Path, show: int = 20) -> None:
        """Write the list to ``path`` (one message per line) and log it, at most ``show`` lines."""
        if not self.skip:
            return
        path.write_text("".join(m + "\n" for m in self.messages), encoding="utf-8")
        if not self.messages:
            return
        log.warning("skipped %d bad input(s) (--skip-bad), listed in %s:", self.count, path)
        for m in self.messages[:show]:
            log.warning("  %s", m)
        if self.count > show:
            log.warning("  ... and %d more", self.count - show)
