"""What ensemble tasks share with their scheduler, without importing Ray: the error a failed task
becomes, and progress files.

A task reports progress by rewriting a small JSON file (``{"done", "total", "pid", "time"}``)
atomically, at most every ``every_seconds``; the driver polls the files and draws one progress
bar per task. Files rather than a Ray channel because the run directory already has to be on a
filesystem every worker shares (a retried task resumes from its checkpoint there).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["EnsembleError", "ProgressWriter", "read_progress"]


class EnsembleError(RuntimeError):
    """A sub-model or evaluation task failed for good; the message names it and what to do."""


class ProgressWriter:
    """Rewrites ``path`` with a task's progress, at most every ``every_seconds`` (and always at
    the end, when ``done == total``)."""

    def __init__(self, path: Path, every_seconds: float = 0.5) -> None:
        self.path = Path(path)
        self.every_seconds = every_seconds
        self._last = float("-inf")

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self.every_seconds:
            return
        self._last = now
        record = {"done": int(done), "total": int(total), "pid": os.getpid(), "time": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(record))
        os.replace(tmp, self.path)


def read_progress(path: Path) -> dict[str, Any] | None:
    """The last record a :class:`ProgressWriter` wrote to ``path``; None if there is none yet."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
