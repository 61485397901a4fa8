"""Choosing facts for a run: relations by name (or Wikidata id) and a seeded, capped sample per
relation, optionally only the facts a model knows (the model is probed lazily; data imports no model)."""
from __future__ import annotations

import logging
import math
import random
import sys
from typing import TYPE_CHECKING, Iterable, MutableMapping, Sequence

from tqdm import tqdm

from .prepare import filter_known, prepare_fact, prepare_facts

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


KNOWN_TOP = 10  # `known`: the gold's rank within this top on at least min_fraction of the prompts


def select_facts(facts, *, relations: Iterable[str] | None = None, per_relation: int | None = None,
                 language: str | Sequence[str] = "en", lm: LM | None = None, known: bool = False, k: int = KNOWN_TOP,
                 min_fraction: float = 0.5, seed: int = 0, sentence: bool = False, progress: bool = False,
                 memo: MutableMapping[str, dict] | None = None):
    """A deterministic selection from a FactSet: the given relations, facts with a version in
    `language` (one code, or several: facts aligned across all of them), at most `per_relation` of
    each (seeded sample, original order kept); with `known`, only facts whose gold token `lm` ranks in
    its top-`k` on at least `min_fraction` of their prompts, in every language (probed in the sample's
    order until `per_relation` are found; a sentence target, with `sentence`, ranks by its margin over
    the distractors, `kn.data.prepare.filter_known`).

    sentence: a causal LM also takes the prompts whose object is not last (`kn.data.prepare_fact`).
    With `lm`, the result's ``info["selection"]`` holds per language how many facts have a version,
    how many `lm` can be asked (and why not the others) and, with `known`, how many were probed and
    known; `explain` turns it into the sentence to show when the selection is empty. progress: with
    `known`, a bar over the relations probed (stderr), for a command line. memo: with `known`, each
    relation's known facts and counts as it is done (relation -> {"ids", "counts"}), and a relation it
    already holds is not probed again: a selection cut short resumes (`kn.data.shared_selection.Progress`)."""
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
    counts = None if lm is None else language_counts(facts.filter(relation=rels), lm, languages, sentence=sentence)
    chosen: set[str] = set()
    with tqdm(total=len(rels), desc="known facts", unit="relation", disable=not (known and progress),
              file=sys.stderr) as bar:
        for r in rels:
            bar.set_postfix_str(f"{r}, {len(chosen)} selected")
            ids = [f.fact_id for f in pool if f.relation == r]
            random.Random(f"{seed}|{r}").shuffle(ids)
            if not known:
                chosen.update(ids if per_relation is None else ids[:per_relation])
                continue
            if memo is not None and r in memo:
                found = memo[r]["ids"]
                for lang in languages:
                    for what, n in memo[r]["counts"][lang].items():
                        counts[lang][what] = counts[lang].get(what, 0) + n
            else:
                before = {lang: dict(counts[lang]) for lang in languages}
                found = _known(pool, ids, lm, languages, per_relation, k, min_fraction, sentence, counts)
                if memo is not None:
                    memo[r] = {"ids": found, "counts": {lang: {what: counts[lang][what] - before[lang].get(what, 0)
                                                               for what in ("probed", "known")} for lang in languages}}
            chosen.update(found)
            bar.update()
            log.info("relation %s: %d known facts selected", r, len(found))
    out = pool.filter(ids=chosen)
    if counts is not None:
        out.info = {**out.info, "selection": {"languages": languages, "counts": counts, "known": known,
                                              "sentence": sentence, "masked": bool(lm.masked),
                                              "aligned": len(pool), "selected": len(out)}}
    return out


def select_in_languages(facts, languages: Sequence[str], lm: LM, **kw):
    """`select_facts` over `languages` (`kw` its other arguments, `lm` given); when no fact is selected
    in every one of them, the languages that have none usable or none known are left out, one pass, as
    long as one remains, and the selection is made again. Returns (selection, the languages it holds,
    `explain` of the first selection when languages were left out, else "")."""
    languages = list(languages)
    chosen = select_facts(facts, language=languages, lm=lm, **kw)
    if len(chosen):
        return chosen, languages, ""
    sel = chosen.info["selection"]
    counts = sel["counts"]
    empty = [l for l in languages if counts[l]["usable"] == 0 or (counts[l].get("probed") and counts[l]["known"] == 0)]
    kept = [l for l in languages if l not in empty]
    why = explain(sel)
    if not empty or not kept:
        return chosen, languages, why
    return select_facts(facts, language=kept, lm=lm, **kw), kept, why


def language_counts(facts, lm, languages: Sequence[str], *, sentence: bool = False) -> dict[str, dict[str, int]]:
    """{language: {"facts": with a version, "usable": `lm` can be asked (`PreparedFact.usable`),
    "no_prompt": no template `lm` can take, "unrepresentable": an answer its tokenizer cannot write}}
    (tokenization only, no model pass)."""
    out = {}
    for lang in languages:
        prepared = prepare_facts([f for f in facts if f.has(lang)], lm, lang, sentence=sentence)
        out[lang] = {"facts": len(prepared), "usable": sum(p is not None and p.usable for p in prepared),
                     "no_prompt": sum(p is None or not p.prompts for p in prepared),
                     "unrepresentable": sum(p is not None and bool(p.prompts) and not p.representable
                                            for p in prepared)}
    return out


def explain(selection: dict) -> str:
    """Why a selection holds what it holds, per language (`select_facts`' ``info["selection"]``): how many
    facts have a version, how many the model can be asked and why not the others, how many it knows;
    and what to change when a language has none."""
    langs, counts = selection["languages"], selection["counts"]
    parts = []
    for lang in langs:
        c = counts[lang]
        why = []
        if c["no_prompt"]:
            why.append(f"{c['no_prompt']} without a template the model can take"
                       + ("" if selection["masked"] or selection["sentence"] else " (none has its object last)"))
        if c["unrepresentable"]:
            why.append(f"{c['unrepresentable']} with an answer its tokenizer cannot write")
        text = f"{lang}: {c['facts']} facts, {c['usable']} usable" + (f" ({'; '.join(why)})" if why else "")
        if c.get("probed"):
            text += f", {c['known']} known of {c['probed']} probed"
        elif "probed" in c and c["usable"]:
            text += ", none probed (no fact usable in every language)"
        parts.append(text)
    unusable = [l for l in langs if counts[l]["usable"] == 0]
    unknown = [l for l in langs if counts[l].get("probed") and counts[l]["known"] == 0]
    fixes = []
    if unusable or unknown:
        fixes.append(f"leave out {', '.join(unusable + unknown)}")
    if not selection["masked"] and not selection["sentence"] and any(counts[l]["no_prompt"] for l in langs):
        fixes.append("pass sentence=True (kn run / kn coverage --sentence) to score the prompts whose object is "
                     "not last by the sentence's log-probability from the object on")
    if selection.get("known") and not unusable:
        fixes.append("drop known=True (--known) or take more facts per relation")
    what = selection.get("what", "selected")
    return (f"{selection.get('selected', 0)} facts {what} of {selection.get('aligned', 0)} with a version in "
            f"every one of {', '.join(langs)}. Per language: " + "; ".join(parts) + "."
            + (f" To get facts: {', or '.join(fixes)}." if fixes and not selection.get("selected") else ""))


PROBE_FACTS = 16  # facts whose next-token prompts share one batched probe (speed, not results)


def _known(pool, ids: list[str], lm, languages: Sequence[str], per_relation: int | None, k: int,
           min_fraction: float, sentence: bool, counts: dict) -> list[str]:
    """The first `per_relation` of `ids` (all, for None) that `lm` knows in every language (probed only
    where it can be asked in every one; `counts[language]` tallies the probed and known). The
    next-token prompts of a few facts at a time are probed in one batch (`_probe_ahead`); the facts
    are then judged one by one in order, so what is kept and counted does not depend on the batch."""
    out: list[str] = []
    tops: dict = {}
    for lang in languages:
        counts[lang] |= {"probed": 0, "known": 0} if "probed" not in counts[lang] else {}
    for n, fid in enumerate(ids):
        if per_relation is not None and len(out) >= per_relation:
            break
        prepared = [prepare_fact(pool[fid], lm, lang, sentence=sentence) for lang in languages]
        if not all(p is not None and p.usable for p in prepared):
            continue
        if not all(q in tops for p in prepared for q in _next_token(p)):
            need = len(ids) - n if per_relation is None else per_relation - len(out)
            tops = _probe_ahead(pool, ids[n:n + min(PROBE_FACTS, max(2, 2 * need))], lm, languages, k, sentence,
                                min_fraction)
        for lang, p in zip(languages, prepared):
            hit = _knows(lm, p, k, min_fraction, tops)
            counts[lang]["probed"] += 1
            counts[lang]["known"] += hit
            if not hit:
                break
        else:
            out.append(fid)
    return out


def _next_token(p) -> list[str]:
    return [q for q, t in zip(p.prompts, p.targets) if t == "next_token"]


def _probe_ahead(pool, ids: list[str], lm, languages: Sequence[str], k: int, sentence: bool,
                 min_fraction: float) -> dict:
    """{prompt: top-k predictions} of the next-token prompts of `ids`' usable facts, in two batched probes:
    first enough of each (fact, language)'s prompts to decide it when they all agree (`_first_round`),
    then the rest of those still open. A prompt left out maps to no predictions (a miss): its fact is
    decided either way, so `filter_known` keeps what it would keep with every prompt probed."""
    from ..probing import batch_probe

    groups = []
    for fid in ids:
        prepared = [prepare_fact(pool[fid], lm, lang, sentence=sentence) for lang in languages]
        if all(p is not None and p.usable for p in prepared):
            groups += [(p, _next_token(p)) for p in prepared]
    tops: dict = {}

    def probe(prompts):
        prompts = [q for q in dict.fromkeys(prompts) if q not in tops]
        if prompts:
            tops.update(zip(prompts, batch_probe(lm, prompts, k=k)))

    probe([q for p, qs in groups for q in (qs[:_first_round(p, min_fraction)] if len(qs) == len(p.prompts) else qs)])
    for p, qs in groups:
        if len(qs) < len(p.prompts) or _open(p, qs, tops, min_fraction):
            probe(qs)
    for _, qs in groups:
        for q in qs:
            tops.setdefault(q, ())
    return tops


def _first_round(p, min_fraction: float) -> int:
    """Prompts of `p` that decide it when they all agree: all hits reach the `min_fraction` share, all misses
    leave too few prompts to reach it."""
    n = len(p.prompts)
    need = math.ceil(min_fraction * n)
    return min(n, max(need, n - need + 1))


def _open(p, qs: list[str], tops: dict, min_fraction: float) -> bool:
    """Whether `p`'s probed prompts in `tops` leave it undecided: too few hits for `min_fraction` of its
    prompts yet, and enough unprobed prompts left to get there."""
    from .prepare import is_hit

    probed = [q for q in qs if q in tops]
    hits = sum(is_hit(tops[q], p) for q in probed)
    need = min_fraction * len(p.prompts)
    return hits < need <= hits + len(qs) - len(probed)


def _knows(lm, p, k: int, min_fraction: float, tops: dict) -> bool:
    from ..probing import answer_logprobs, batch_probe

    return bool(filter_known([p], lambda q: tops[q] if q in tops else batch_probe(lm, [q], k=k)[0],
                             min_fraction=min_fraction, score=lambda q, answers: answer_logprobs(lm, q, answers)).kept)
