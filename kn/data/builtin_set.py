"""The built-in multilingual fact set: 12 relations x 40+ true facts in English, Chinese, French,
Spanish, German and Russian, written for kn and shipped with it (the book's default data).

Files in ``kn/data/builtin/``: ``entities.json`` (entity id -> name per language; ``"fr:subject"``
and the like give the form a subject takes inside a sentence, e.g. "la France"), one
``<relation>.json`` per relation (templates per language, ``[subject id, object id]`` pairs) and
``manifest.json`` (languages, relation order, distractors per fact). Distractors are other objects of
the same relation whose names differ from the gold object's in every language, picked by a hash of
the fact id (stable across runs and machines).
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources

from . import templates as T
from .schema import Fact, FactSet

PACKAGE_DIR = "builtin"


def _read(name: str) -> dict:
    return json.loads(resources.files(__package__).joinpath(PACKAGE_DIR, name).read_text(encoding="utf-8"))


def _subject(entity: dict, lang: str) -> str:
    return entity.get(f"{lang}:subject", entity[lang])


def _distractors(fact_id: str, obj_id: str, pool: list[str], entities: dict, langs: list[str],
                 n: int) -> list[str]:
    gold = entities[obj_id]
    cands = sorted({o for o in pool if o != obj_id and all(entities[o][l] != gold[l] for l in langs)})
    cands.sort(key=lambda o: hashlib.sha256(f"{fact_id}|{o}".encode()).hexdigest())
    chosen: list[str] = []
    for o in cands:  # no two distractors may read the same in any language ("dollar" twice)
        if all(entities[o][l] != entities[c][l] for c in chosen for l in langs):
            chosen.append(o)
        if len(chosen) == n:
            break
    return chosen


@lru_cache(maxsize=1)
def _load() -> FactSet:
    manifest = _read("manifest.json")
    entities = _read("entities.json")
    langs, n = manifest["languages"], manifest["n_distractors"]
    facts, descriptions = [], {}
    for rel in manifest["relations"]:
        doc = _read(f"{rel}.json")
        descriptions[rel] = {"description": doc["description"], "wikidata": doc["wikidata"]}
        templates = {l: tuple(T.check(t, need_subject=True) for t in doc["templates"][l]) for l in langs}
        pool = [o for _, o in doc["facts"]]
        for s_id, o_id in doc["facts"]:
            fid = f"{rel}/{s_id.split('/', 1)[1]}"
            dis = _distractors(fid, o_id, pool, entities, langs, n)
            facts.append(Fact(
                fid, rel,
                subject={l: _subject(entities[s_id], l) for l in langs},
                object={l: entities[o_id][l] for l in langs},
                templates=templates,
                distractors={l: tuple(entities[d][l] for d in dis) for l in langs},
                source="builtin", inflect=True,
            ))
    info = {"version": manifest["version"], "relations": descriptions, "origin": manifest["origin"]}
    return FactSet(facts, "builtin", info)


def builtin() -> FactSet:
    """The built-in fact set (a FactSet; see the module docstring). Loaded once, then cached."""
    return _load()
