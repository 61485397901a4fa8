"""A run's journal records, indexed by record type and key (what is done, and its result)."""
from __future__ import annotations

from typing import Iterable, Mapping


class State:
    """Records by type ("fact", "relation", "verify", ...) and key (a record's fact_id or relation).

    keys: record type -> the field that keys it. Records of other types are ignored; the first record
    of a key wins, so a duplicate can never count twice.
    """

    def __init__(self, keys: Mapping[str, str], records: Iterable[dict] = ()):
        self.keys = dict(keys)
        self._by_type: dict[str, dict[str, dict]] = {t: {} for t in self.keys}
        for r in records:
            self.add(r)

    def add(self, record: dict) -> None:
        kind = record.get("type")
        if kind in self._by_type:
            self._by_type[kind].setdefault(record[self.keys[kind]], record)

    def get(self, kind: str | None, key: str) -> dict | None:
        """The record of type `kind` for `key`, or None."""
        return self._by_type.get(kind, {}).get(key) if kind else None

    def has(self, kind: str, key: str) -> bool:
        return key in self._by_type.get(kind, {})

    def all(self, kind: str) -> dict[str, dict]:
        """{key: record} of one type, in journal order."""
        return self._by_type.get(kind, {})
