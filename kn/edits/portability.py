"""Portability through a relation's reverse (Niu et al. 2024's symmetry criterion; EasyEdit's
portability): after an edit moves (s, r, o) to o', is s the answer of the reverse query about o'
("o' shares a border with" -> s; "o' is the capital of" -> s)? The reverse query about the old
object o tells whether the model knew the reverse before, and whether the edit kept it.

`REVERSE` names each relation's reverse by its Wikidata / PARAREL id: P47 (shares a border with) and
P530 (diplomatic relation) are symmetric, P36 (capital) and P1376 (capital of) are each other's.

Synonymy (Niu et al.'s second criterion): after "s works in the field of" moves to the field o', does
"s is a famous" continue with o''s occupation (physics -> physicist)? `SYNONYMS` holds, per relation and
language, the templates of that query and the map from object to its synonym; kn's own English map
(`OCCUPATIONS`, written for PARAREL P101's common fields; an object without an entry gets no query).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from ..data.schema import Fact

REVERSE = {"P47": "P47", "P530": "P530", "P36": "P1376", "P1376": "P36"}
# a field of work -> the occupation of who works in it (English; PARAREL P101's fields with 2+ facts)
OCCUPATIONS = {"physics": "physicist", "mathematics": "mathematician", "astronomy": "astronomer",
               "chemistry": "chemist", "physiology": "physiologist", "psychology": "psychologist",
               "medicine": "physician", "geometry": "geometer", "sociology": "sociologist", "anatomy": "anatomist",
               "anthropology": "anthropologist", "philosophy": "philosopher", "theology": "theologian",
               "history": "historian", "biology": "biologist", "geography": "geographer", "economics": "economist",
               "logic": "logician", "photography": "photographer", "ecology": "ecologist", "pharmacy": "pharmacist",
               "surgery": "surgeon", "ethics": "ethicist", "classics": "classicist", "art": "artist",
               "poetry": "poet", "aviation": "aviator", "science": "scientist"}
# relation -> {language: (templates of the synonym query, object -> its synonym)}; "famous", "well-known",
# "renowned" begin with a consonant, so "a" fits every occupation
SYNONYMS = {"P101": {"en": (("[X] is a famous [Y].", "[X] is a well-known [Y].", "[X] is a renowned [Y]."),
                            OCCUPATIONS)}}


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


def synonym_fact(fact: Fact, obj: str, language: str) -> Fact | None:
    """The synonym query of `fact` for the object `obj` (`SYNONYMS`: the fact's subject, the object's
    synonym, the query's templates), or None if the relation, the language or the object has none."""
    templates, synonym = SYNONYMS.get(fact.relation, {}).get(language, ((), {}))
    word = synonym.get(obj.strip())
    if not word or language not in fact.subject:
        return None
    return Fact(f"{fact.fact_id}|synonym|{obj.strip()}", f"{fact.relation}|synonym", {language: fact.subject[language]},
                {language: word}, {language: tuple(templates)}, source=fact.source, inflect=fact.inflect)
