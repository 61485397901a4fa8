"""One fact schema for every source: `Fact` (a subject-relation-object triple in several languages,
with its prompt templates and same-relation distractors) and `FactSet` (a filterable collection).

Facts are aligned across languages by `fact_id`: ``fact.subject["zh"]`` and ``fact.subject["en"]``
name the same entity. Templates use PARAREL's notation (`[X]` subject, `[Y]` object) and are rendered
per fact: ``fact.prompts("en")`` keeps `[Y]`, ``fact.cloze("en")`` puts a mask there (masked LMs),
``fact.causal_prompts("en")`` cuts object-last templates before `[Y]` (causal LMs).
"""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from . import templates as T


def _tuple_map(m: Mapping[str, Iterable[str]] | None) -> dict[str, tuple[str, ...]]:
    return {str(k): tuple(v) for k, v in (m or {}).items()}


@dataclass(frozen=True)
class Fact:
    """A relational fact in one or more languages.

    fact_id:     stable identifier, unique within a FactSet ("capital/france", "P36:<uuid>").
    relation:    relation id ("capital", "P36").
    subject:     language -> subject as it appears in prompts ({"en": "France", "fr": "la France"}).
    object:      language -> gold object ({"en": "Paris", "zh": "巴黎"}).
    templates:   language -> prompt templates, each with one `[Y]` and (usually) one `[X]`.
    distractors: language -> wrong objects of the same relation, never the gold object.
    source:      where the fact comes from ("builtin", "pararel", "bmlama17", ...).
    inflect:     apply the surface rules of `templates.fill_subject` (hand-written data only).
    """

    fact_id: str
    relation: str
    subject: dict[str, str] = field(hash=False)
    object: dict[str, str] = field(hash=False)
    templates: dict[str, tuple[str, ...]] = field(hash=False)
    distractors: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    source: str = ""
    inflect: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "subject", dict(self.subject))
        object.__setattr__(self, "object", dict(self.object))
        object.__setattr__(self, "templates", _tuple_map(self.templates))
        object.__setattr__(self, "distractors", _tuple_map(self.distractors))
        for lang, ts in self.templates.items():
            for t in ts:
                T.check(t)

    # -- languages ---------------------------------------------------------------------------
    @property
    def languages(self) -> tuple[str, ...]:
        """Languages with a subject, an object and at least one template."""
        return tuple(l for l in self.templates if self.templates[l] and l in self.subject and l in self.object)

    def has(self, language: str) -> bool:
        return language in self.languages

    def _need(self, language: str) -> None:
        if not self.has(language):
            raise KeyError(f"fact {self.fact_id!r} has no {language!r} version (has {list(self.languages)})")

    # -- rendering ---------------------------------------------------------------------------
    def prompts(self, language: str = "en") -> list[str]:
        """Every template with the subject filled in and `[Y]` left where the object goes."""
        self._need(language)
        s = self.subject[language]
        return [T.fill_subject(t, s, language, inflect=self.inflect) for t in self.templates[language]]

    def cloze(self, language: str = "en", mask: str = T.MASK) -> list[str]:
        """Prompts for masked LMs: every template, the object slot replaced by `mask`."""
        return [T.cloze(p, mask) for p in self.prompts(language)]

    def causal_pairs(self, language: str = "en", *, sentence: bool = False) -> list[tuple[str, str]]:
        """(prefix, answer) for each object-last template: "The capital of France is", " Paris".

        The prefix has no trailing space; the answer starts with the space the template had before
        `[Y]` (none for Chinese or Japanese), so ``prefix + answer`` is the sentence up to the object.
        With `sentence`, templates whose object is not last (but not first) give a pair too, the answer
        running on to the end of the sentence (a `templates.Continuation` with its `tail`: "カルロス2世は",
        "マドリードに生まれました。"), the target a causal LM's log-probability of the sentence from the
        object on (book chapter "Facts and prompts").
        """
        obj = self.object[language] if self.has(language) else ""
        out = []
        for t, p in zip(self.templates.get(language, ()), self.prompts(language)):
            head = p.split(T.OBJECT, 1)[0]
            if T.object_last(t):
                out.append((head.rstrip(), T.answer_separator(head) + obj))
            elif sentence and head.strip():
                tail = T.tail_of(p)
                out.append((head.rstrip(), T.Continuation(T.answer_separator(head) + obj + tail, tail)))
        return out

    def causal_prompts(self, language: str = "en", *, sentence: bool = False) -> list[str]:
        """Prefixes of the object-last templates (text before `[Y]`, no trailing space); with
        `sentence`, of the templates whose object is not last too (`causal_pairs`)."""
        return [p for p, _ in self.causal_pairs(language, sentence=sentence)]

    def sentences(self, language: str = "en") -> list[str]:
        """Every template filled with subject and gold object: the fact as plain text."""
        obj = self.object[language] if self.has(language) else ""
        return [T.fill_object(p, obj, inflect=self.inflect) for p in self.prompts(language)]

    # -- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "fact_id": self.fact_id, "relation": self.relation, "subject": dict(self.subject),
            "object": dict(self.object), "templates": {k: list(v) for k, v in self.templates.items()},
            "distractors": {k: list(v) for k, v in self.distractors.items()},
            "source": self.source, "inflect": self.inflect,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fact:
        return cls(**{k: d[k] for k in ("fact_id", "relation", "subject", "object", "templates")},
                   distractors=d.get("distractors", {}), source=d.get("source", ""),
                   inflect=bool(d.get("inflect", False)))


def _as_set(x: str | Iterable[str] | None) -> set[str] | None:
    if x is None:
        return None
    return {x} if isinstance(x, str) else set(x)


def fingerprint(facts: Iterable[Fact]) -> str:
    """sha256 of the facts' canonical JSON, in order (what a run records to name its data)."""
    h = hashlib.sha256()
    for f in facts:
        h.update(json.dumps(f.to_dict(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


class FactSet(Sequence[Fact]):
    """An ordered collection of facts with unique ids: iterate, `len()`, index by position, slice, or
    by fact id (``facts["capital/france"]``), filter, sample, tabulate, save.

    `info` carries loader notes (dropped relations, block boundaries, ...); it is not part of the data.
    """

    def __init__(self, facts: Iterable[Fact] = (), name: str = "", info: Mapping[str, Any] | None = None):
        self._facts: tuple[Fact, ...] = tuple(facts)
        self.name = name
        self.info: dict[str, Any] = dict(info or {})
        self._index: dict[str, int] = {}
        for i, f in enumerate(self._facts):
            if f.fact_id in self._index:
                raise ValueError(f"duplicate fact id {f.fact_id!r} in FactSet {name!r}")
            self._index[f.fact_id] = i

    # -- sequence protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._facts)

    def __iter__(self) -> Iterator[Fact]:
        return iter(self._facts)

    @overload
    def __getitem__(self, i: int) -> Fact: ...
    @overload
    def __getitem__(self, i: slice) -> FactSet: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return FactSet(self._facts[i], self.name, self.info)
        if isinstance(i, str):
            return self._facts[self._index[i]]
        return self._facts[i]

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return item in self._index
        return isinstance(item, Fact) and self._index.get(item.fact_id) is not None

    def __add__(self, other: FactSet) -> FactSet:
        return FactSet((*self._facts, *other), self.name or other.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FactSet) and self._facts == other._facts

    def __repr__(self) -> str:
        return (f"FactSet({self.name!r}: {len(self)} facts, {len(self.relations)} relations, "
                f"languages {list(self.languages)})")

    # -- views -------------------------------------------------------------------------------
    @property
    def relations(self) -> tuple[str, ...]:
        """Relation ids in order of first appearance."""
        return tuple(dict.fromkeys(f.relation for f in self._facts))

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages any fact has, in order of first appearance."""
        return tuple(dict.fromkeys(l for f in self._facts for l in f.languages))

    def by_id(self) -> dict[str, Fact]:
        return {f.fact_id: f for f in self._facts}

    def get(self, fact_id: str, default: Fact | None = None) -> Fact | None:
        i = self._index.get(fact_id)
        return default if i is None else self._facts[i]

    def filter(self, relation: str | Iterable[str] | None = None, language: str | Iterable[str] | None = None,
               *, ids: Iterable[str] | None = None, where: Callable[[Fact], bool] | None = None) -> FactSet:
        """Facts of the given relation(s) that exist in all the given language(s) (and ids / predicate)."""
        rels, langs, keep = _as_set(relation), _as_set(language), _as_set(ids)
        out = [f for f in self._facts
               if (rels is None or f.relation in rels)
               and (langs is None or all(f.has(l) for l in langs))
               and (keep is None or f.fact_id in keep)
               and (where is None or where(f))]
        return FactSet(out, self.name, self.info)

    def sample(self, n: int, *, per_relation: bool = True, seed: int = 0) -> FactSet:
        """A deterministic sample: `n` facts per relation (or `n` overall), original order kept."""
        rng = random.Random(seed)
        if per_relation:
            chosen: set[str] = set()
            for r in self.relations:
                ids = [f.fact_id for f in self._facts if f.relation == r]
                chosen.update(ids if len(ids) <= n else rng.sample(ids, n))
        else:
            ids = [f.fact_id for f in self._facts]
            chosen = set(ids if len(ids) <= n else rng.sample(ids, n))
        return FactSet([f for f in self._facts if f.fact_id in chosen], self.name, self.info)

    # -- tables ------------------------------------------------------------------------------
    def to_frame(self, language: str | Iterable[str] | None = None):
        """pandas DataFrame, one row per (fact, language): ids, subject, object, distractors, templates."""
        import pandas as pd

        langs = _as_set(language)
        rows = []
        for f in self._facts:
            for l in f.languages:
                if langs is not None and l not in langs:
                    continue
                rows.append({
                    "fact_id": f.fact_id, "relation": f.relation, "language": l,
                    "subject": f.subject[l], "object": f.object[l],
                    "distractors": list(f.distractors.get(l, ())),
                    "n_templates": len(f.templates[l]),
                    "n_causal_templates": sum(T.object_last(t) for t in f.templates[l]),
                    "source": f.source,
                })
        cols = ["fact_id", "relation", "language", "subject", "object", "distractors", "n_templates",
                "n_causal_templates", "source"]
        return pd.DataFrame(rows, columns=cols)

    def summary(self):
        """pandas DataFrame: facts per relation (rows) and language (columns)."""
        df = self.to_frame()
        if df.empty:
            return df
        return df.pivot_table(index="relation", columns="language", values="fact_id", aggfunc="count",
                              fill_value=0).reindex(index=list(self.relations), columns=list(self.languages))

    # -- persistence -------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 of the facts' canonical JSON: names exactly this data in run records."""
        return fingerprint(self._facts)

    def save(self, path: str | Path) -> Path:
        """Write the facts as JSON lines (one fact per line)."""
        path = Path(path)
        with path.open("w", encoding="utf-8") as fh:
            for f in self._facts:
                fh.write(json.dumps(f.to_dict(), ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, name: str = "") -> FactSet:
        """Read facts written by `save`."""
        path = Path(path)
        with path.open(encoding="utf-8") as fh:
            facts = [Fact.from_dict(json.loads(line)) for line in fh if line.strip()]
        return cls(facts, name or path.stem)
