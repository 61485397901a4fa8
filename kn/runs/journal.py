"""A run's journal: append-only JSON lines, the source of truth of a run (kill-safe).

Every record is flushed and fsynced before `append` returns. `read` cuts off a torn last line (a
kill during a write), so a restart redoes exactly the record that was being written.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class Journal:
    """Append-only JSON lines; every record is flushed and fsynced before `append` returns."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fh = None

    def read(self, repair: bool = True) -> list[dict]:
        """The records in order. A torn last line (no newline, or not JSON) is ignored and, with
        `repair`, cut off the file; an unreadable line in the middle is skipped with a warning."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records, pos, good = [], 0, 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                break  # torn tail: the process died during the write
            line = data[pos:end].strip()
            pos = end + 1
            if not line:
                good = pos
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                if data[pos:].strip():
                    log.warning("%s: skipping an unreadable record at byte %d", self.path, pos)
                    good = pos
                continue
            good = pos
        if good < len(data):
            log.warning("%s: ignoring a torn last record (%d bytes)", self.path, len(data) - good)
            if repair:
                self._truncate(good)
        return records

    def _truncate(self, size: int) -> None:
        with open(self.path, "r+b") as fh:
            fh.truncate(size)
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, record: dict) -> None:
        if self._fh is None:
            self._fh = open(self.path, "ab")
        self._fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
