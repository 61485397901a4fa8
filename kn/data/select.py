"""Choosing facts for a run: relations by name (or Wikidata id) and a seeded, capped sample per
relation, optionally only the facts a model knows (the model is probed lazily; data imports no model)."""
from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Iterable, Sequence

from .prepare import filter_known, prepare_fact

if TYPE_CHECKING:
    from ..models import LM

log = logging.getLogger(__name__)


def resolve_relations(facts, relations: Iterable[str]) -> list[str]:
    """Relation ids of `facts` for the requested names; Wikidata ids (P36) also name built-in relations."""
    have = list(facts.relations) if hasattr(facts, "relations") else list(dict.fromkeys(f.relation for f in facts))
    wiki = {d.get("wikidata"): r for r, d in (getattr(facts, "info", {}) or {}).get("relations", {}).items()
            if isinstance(d, dict)}
    out = []
    for r in relations:
        if r in have:
            out.append(r)
        elif r in wiki and wiki[r] in have:
            out.append(wiki[r])
        else:
            raise ValueError(f"relation {r!r} is not in the data; it has {', '.join(have)}")
    return out


def select_facts(facts, *, relations: Iterable[str] | None = None, per_relation: int | None = None,
                 language: str | Sequence[str] = "en", lm: LM | None = None, known: bool = False, k: int = 10,
                 min_fraction: float = 0.5, seed: int = 0):
    """A deterministic selection from a FactSet: the given relations, facts with a version in
    `language` (one code, or several: facts aligned across all of them), at most `per_relation` of
    each (seeded sample, original order kept); with `known`, only facts whose gold token `lm` ranks in
    its top-`k` on at least `min_fraction` of their prompts, in every language (probed in the sample's
    order until `per_relation` are found)."""
    languages = [language] if isinstance(language, str) else list(language)
    if isinstance(relations, str):
        relations = [relations]
    if per_relation is not None and (isinstance(per_relation, bool) or not isinstance(per_relation, int)
                                     or per_relation < 1):
        raise ValueError(f"per_relation must be None (all facts) or an integer >= 1, got {per_relation!r}")
    rels = resolve_relations(facts, relations) if relations else list(facts.relations)
    pool = facts.filter(relation=rels, language=languages)
    if known and lm is None:
        raise ValueError("known=True needs the model (lm=...)")
    chosen: set[str] = set()
    for r in rels:
        ids = [f.fact_id for f in pool if f.relation == r]
        random.Random(f"{seed}|{r}").shuffle(ids)
        if not known:
            chosen.update(ids if per_relation is None else ids[:per_relation])
            continue
        found = _known(pool, ids, lm, languages, per_relation, k, min_fraction)
        chosen.update(found)
        log.info("relation %s: %d known facts selected", r, len(found))
    return pool.filter(ids=chosen)


def _known(pool, ids: list[str], lm, languages: Sequence[str], per_relation: int | None, k: int,
           min_fraction: float) -> list[str]:
    """The first `per_relation` of `ids` (all, for None) that `lm` knows in every language."""
    out = []
    for fid in ids:
        if per_relation is not None and len(out) >= per_relation:
            break
        if all(_knows(lm, pool[fid], lang, k, min_fraction) for lang in languages):
            out.append(fid)
    return out


def _knows(lm, fact, language: str, k: int, min_fraction: float) -> bool:
    from ..probing import batch_probe

    p = prepare_fact(fact, lm, language) if fact.has(language) else None
    if p is None or not p.usable:
        return False
    tops = dict(zip(p.prompts, batch_probe(lm, list(p.prompts), k=k)))  # all the fact's prompts in one pass
    return bool(filter_known([p], tops.__getitem__, min_fraction=min_fraction).kept)
