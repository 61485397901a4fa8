"""A run's journal records, indexed by record type and key (what is done, and its result)."""
from __future__ import annotations

from typing import Iterable, Mapping

KEY = "key"  # a record's field naming what it depends on (`kn.runs.phases.base.Phase.bind`)


class State:
    """Records by type ("fact", "relation", "verify", ...) and id (a record's fact_id or relation).

    ids: record type -> the field that identifies it; versions: record type -> the key its records
    must carry (None: any). Records of other types or keys are ignored; the first record of an id
    wins, so a duplicate can never count twice.
    """

    def __init__(self, ids: Mapping[str, str], records: Iterable[dict] = (), versions: Mapping[str, str] | None = None):
        self.keys = dict(ids)
        self.versions = None if versions is None else dict(versions)
        self._by_type: dict[str, dict[str, dict]] = {t: {} for t in self.keys}
        for r in records:
            self.add(r)

    def add(self, record: dict) -> None:
        kind = record.get("type")
        if kind in self._by_type and (self.versions is None or record.get(KEY) == self.versions.get(kind)):
            self._by_type[kind].setdefault(record[self.keys[kind]], record)

    def get(self, kind: str | None, key: str) -> dict | None:
        """The record of type `kind` for `key`, or None."""
        return self._by_type.get(kind, {}).get(key) if kind else None

    def has(self, kind: str, key: str) -> bool:
        return key in self._by_type.get(kind, {})

    def all(self, kind: str) -> dict[str, dict]:
        """{key: record} of one type, in journal order."""
        return self._by_type.get(kind, {})


def with_legacy_keys(records: Iterable[dict], legacy: Mapping[str, str]) -> list[dict]:
    """The records, each without a key given the one its type had when it was written (`legacy`: a
    journal written before records carried keys; see `kn.runs.config.legacy_keys`)."""
    return [r if KEY in r or r.get("type") not in legacy else {**r, KEY: legacy[r["type"]]} for r in records]
