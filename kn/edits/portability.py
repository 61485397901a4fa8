"""Portability through a relation's reverse (Niu et al. 2024's symmetry criterion; EasyEdit's
portability): after an edit moves (s, r, o) to o', is s the answer of the reverse query about o'
("o' shares a border with" -> s; "o' is the capital of" -> s)? The reverse query about the old
object o tells whether the model knew the reverse before, and whether the edit kept it.

`REVERSE` names each relation's reverse by its Wikidata / PARAREL id: P47 (shares a border with) and
P530 (diplomatic relation) are symmetric, P36 (capital) and P1376 (capital of) are each other's.
Niu et al.'s synonymy case (P101 "field of work" -> an occupation) needs a field-to-occupation map
that no dataset here has; it is not measured.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from ..data.schema import Fact

REVERSE = {"P47": "P47", "P530": "P530", "P36": "P1376", "P1376": "P36"}


def reverse_templates(facts: Sequence[Fact]) -> dict[tuple[str, str], tuple[str, ...]]:
    """{(relation, language): templates} of the first fact of each relation that has them."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for f in facts:
        for lang, ts in f.templates.items():
            out.setdefault((f.relation, lang), tuple(ts))
    return out


def reverse_fact(fact: Fact, obj: str, language: str, templates: Mapping[tuple[str, str], Sequence[str]]) -> Fact | None:
    """The reverse query of `fact` about the object `obj` (subject `obj`, object the fact's subject, the
    reverse relation's templates), or None if the relation has no reverse or its templates are absent."""
    rev = REVERSE.get(fact.relation)
    ts = templates.get((rev, language)) if rev else None
    if not ts or language not in fact.subject:
        return None
    return Fact(f"{fact.fact_id}|reverse|{obj}", rev, {language: obj.strip()}, {language: fact.subject[language]},
                {language: tuple(ts)}, source=fact.source, inflect=fact.inflect)
