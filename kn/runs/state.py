"""A run's journal records, indexed by language, record type and id (what is done, and its result).

A run's unit of work is a (fact, language): every record carries its "language" (records written
before runs had several languages count as the run's first). A phase that works in one language sees
that language's records (`State.lang`); a phase over every language of a fact (cross-lingual) sees
them all, and its own records carry the language `ALL`.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

KEY = "key"  # a record's field naming what it depends on (`kn.runs.phases.base.Phase.bind`)
LANGUAGE = "language"  # a record's field naming its language
ALL = "*"  # the language of a record about a fact in every language


class LanguageState:
    """One language's records by type ("fact", "relation", "verify", ...) and id (a record's fact_id
    or relation). The first record of an id wins, so a duplicate can never count twice."""

    def __init__(self, keys: Mapping[str, str], language: str, run: State):
        self.keys, self.language, self._run = keys, language, run
        self._by_type: dict[str, dict[str, dict]] = {t: {} for t in keys}

    @property
    def languages(self) -> tuple[str, ...]:
        """The run's languages."""
        return self._run.languages

    def lang(self, language: str) -> LanguageState:
        """Another language's records (for a phase over every language)."""
        return self._run.lang(language)

    def add(self, record: dict) -> None:
        self._by_type[record["type"]].setdefault(record[self.keys[record["type"]]], record)

    def get(self, kind: str | None, key: str) -> dict | None:
        """The record of type `kind` for `key`, or None."""
        return self._by_type.get(kind, {}).get(key) if kind else None

    def has(self, kind: str, key: str) -> bool:
        return key in self._by_type.get(kind, {})

    def all(self, kind: str) -> dict[str, dict]:
        """{key: record} of one type, in journal order."""
        return self._by_type.get(kind, {})


class State:
    """Every language's records (`lang`); records of other types or keys than the run's are ignored.

    ids: record type -> the field that identifies it; versions: record type -> the key its records
    must carry (None: any); languages: the run's, the first one also that of records without one.
    """

    def __init__(self, ids: Mapping[str, str], records: Iterable[dict] = (), versions: Mapping[str, str] | None = None,
                 languages: Sequence[str] = ("en",)):
        self.keys = dict(ids)
        self.versions = None if versions is None else dict(versions)
        self.languages = tuple(languages)
        self._langs: dict[str, LanguageState] = {}
        for r in records:
            self.add(r)

    def add(self, record: dict) -> None:
        kind = record.get("type")
        if kind in self.keys and (self.versions is None or record.get(KEY) == self.versions.get(kind)):
            self.lang(record.get(LANGUAGE, self.languages[0])).add(record)

    def lang(self, language: str) -> LanguageState:
        """The records of one language (`ALL`: of the phases over every language)."""
        if language not in self._langs:
            self._langs[language] = LanguageState(self.keys, language, self)
        return self._langs[language]

    # one-language runs read like one language's records
    def get(self, kind: str | None, key: str) -> dict | None:
        return self.lang(self.languages[0]).get(kind, key)

    def has(self, kind: str, key: str) -> bool:
        return self.lang(self.languages[0]).has(kind, key)

    def all(self, kind: str) -> dict[str, dict]:
        return self.lang(self.languages[0]).all(kind)


def with_legacy_keys(records: Iterable[dict], legacy: Mapping[str, str]) -> list[dict]:
    """The records, each without a key given the one its type had when it was written (`legacy`: a
    journal written before records carried keys; see `kn.runs.config.legacy_keys`)."""
    return [r if KEY in r or r.get("type") not in legacy else {**r, KEY: legacy[r["type"]]} for r in records]
