"""Phase "locate" (Dai et al. 2022, section 3.2): per fact, each prompt's coarse neuron set and
P(gold); per relation, the tuned refinement share and each located fact's knowledge neurons.

Records: ``fact`` = {fact_id, relation, subject, answer (the object), prompts, answers (per prompt,
the answer as it follows the prompt), sets (per prompt, [[layer, index], ...]), top (per prompt,
its TOP highest-scoring [[layer, index, score], ...]; absent in older journals), p_before (per
prompt), seconds}, or the same with ``error`` = {type, message};
``relation`` = {relation, share (None if no fact was located), facts (ids located), neurons
{fact_id: [[layer, index], ...]}}. Own table: ``neurons``, a row per (fact, knowledge neuron).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from typing import Sequence

from ...data.prepare import prepare_fact
from ...data.templates import MASK, Continuation, continuation, continued
from ...attribution import batch_scores
from ...localization import coarse, shared_counts, top, tune_share
from ...neuron import Neuron
from ...probing import batch_probs
from ..state import State
from .base import Phase, error_of, mean, record
from .setting import phase_settings, at_least, fraction, fraction_or_none, low_high, open_fraction, positive_fraction, setting

log = logging.getLogger(__name__)

TOP = 20  # each prompt's highest-scoring neurons kept in its record (the degenerate phase's candidates)
NEURON_COLUMNS = ["fact_id", "relation", "layer", "index", "n_prompts_found", "n_facts_sharing"]


def fact_queries(lm, fact, language: str = "en", *, sentence: bool = False
                 ) -> tuple[list[str], list[Continuation], str]:
    """The fact's prompts for `lm` (masked: cloze with [MASK]; causal: object-last prefixes, with
    `sentence` the others too, scored as the sentence from the object on), each prompt's answer as it
    follows it (`kn.data.prepare`), and the object."""
    p = prepare_fact(fact, lm, language, sentence=sentence) if fact.has(language) else None
    if p is None or not p.prompts:
        kind = "masked" if lm.masked else ("causal" if sentence else
                                           "causal (object-last templates only; sentence=True takes the others)")
        raise ValueError(f"fact {fact.fact_id!r} has no {language!r} prompt usable by a {kind} LM")
    return list(p.prompts), list(p.answers), p.object


def answers_of(rec: dict) -> list[Continuation]:
    """Each prompt's answer in a fact record, a sentence target's with its tail (what follows the
    object); records before kn 0.1.0's "answers": from the object."""
    if "answers" in rec:
        return [continued(a, rec.get("answer") or "") for a in rec["answers"]]
    return [continuation(p.split(MASK)[0], rec["answer"]) for p in rec["prompts"]]


# -- what later phases read ----------------------------------------------------------------------
def located(state: State, fact_id: str) -> dict | None:
    """The fact's record if it was located without error: prompts, answer, sets, p_before."""
    rec = state.get(Locate.fact_record, fact_id)
    return rec if rec is not None and "error" not in rec else None


def knowledge_neurons(state: State, fact_id: str, relation: str) -> list[Neuron] | None:
    """The fact's knowledge neurons; None before its relation is tuned or if it was not located."""
    rel = state.get(Locate.relation_record, relation)
    kns = rel["neurons"].get(fact_id) if rel else None
    return None if kns is None else [tuple(n) for n in kns]


def neurons_by_language(view, fact_id: str, relation: str) -> dict[str, set[Neuron]]:
    """{language of the run: the fact's knowledge neurons there} (empty where it has none), read from
    a view that sees every language's records (`State.lang`); `kn.likn.fact_likn` of it is its LIKN."""
    return {l: set(knowledge_neurons(view.lang(l), fact_id, relation) or ()) for l in view.languages}


def located_facts(state: State, relation: str) -> list[str]:
    """The relation's facts located without error (empty before it is tuned)."""
    rel = state.get(Locate.relation_record, relation)
    return list(rel["facts"]) if rel else []


@phase_settings
class LocateSettings:
    """How knowledge neurons are located (Dai et al. 2022, section 3.2; algorithms.md section 1)."""

    threshold: float | None = setting(
        None, "coarse filter t: a neuron passes on a prompt when its score is at least t x the prompt's highest "
              "(default: the attribution's, 0.2 IG / 0.5 activation)", check=fraction_or_none)
    min_prompts: int = setting(3, "refinement floor: a knowledge neuron passes on at least this many prompts",
                               check=at_least(1))
    share: float = setting(0.7, "refinement share p the per-relation tuning starts from", check=fraction,
                           scope="relation")
    kns_per_fact: tuple[float, float] = setting(
        (2, 5), "the (low, high) mean knowledge neurons per fact the share tuning aims for", check=low_high,
        scope="relation", nargs=2)
    share_step: float = setting(0.05, "how far the share tuning moves p per step", check=open_fraction,
                                scope="relation")
    share_tries: int = setting(6, "at most this many share evaluations per relation", check=at_least(1),
                               scope="relation")
    sentence: bool = setting(
        False, "causal LMs: also take the templates whose object is not last (verb-final languages), each scored "
               "as the log-probability of the sentence from the object on (the prompts table's target column)",
        added=True)
    relation_neuron_share: float = setting(
        0.1, "a relation-level neuron is a knowledge neuron of at least this share of the relation's located facts",
        check=positive_fraction, scope="table")



class Locate(Phase):
    name = "locate"
    Settings = LocateSettings
    fact_record = "fact"
    relation_record = "relation"
    fact_columns = ("subject", "answer", "n_prompts", "n_coarse", "n_neurons", "share", "p_before")
    prompt_columns = ("prompt", "answer", "target", "n_coarse", "p_before")
    relation_columns = ("facts_located", "facts_with_neurons", "neurons_per_fact", "share", "relation_neurons",
                        "max_facts_sharing")
    dtypes = {"n_prompts": "Int64", "n_neurons": "Int64"}
    table_names = ("neurons",)
    headline = ("neurons_per_fact", "share")
    summary = (("neurons_per_fact", "KNs/fact", ".2f"), ("share", "share", ".2f"))

    @classmethod
    def resolved(cls, settings: LocateSettings, run) -> LocateSettings:
        if settings.threshold is None:
            return replace(settings, threshold=run.attribution.coarse_threshold)
        return settings

    # -- the work ------------------------------------------------------------------------------
    def run_fact(self, lm, fact, state: State) -> dict:
        s, language = self.settings, state.language
        t0 = time.perf_counter()
        rec = record(self.fact_record, fact_id=fact.fact_id, relation=fact.relation,
                     subject=fact.subject.get(language))
        try:
            prompts, answers, answer = fact_queries(lm, fact, language, sentence=s.sentence)
            rec |= {"answer": answer, "prompts": prompts, "answers": [str(a) for a in answers]}
            if len(prompts) < s.min_prompts:
                raise ValueError(f"{len(prompts)} usable prompt(s), fewer than min_prompts={s.min_prompts}: "
                                 f"no neuron could pass the refinement")
            scores = batch_scores(lm, prompts, answers, self.run.attribution)  # output-layer walks shared
            rec["sets"] = [sorted([l, i] for l, i in coarse(x, s.threshold)) for x in scores]
            rec["top"] = [[list(t) for t in top(x, TOP)] for x in scores]
            rec["p_before"] = batch_probs(lm, prompts, answers)
        except Exception as err:  # recorded; the run goes on
            log.warning("fact %s failed: %s: %s", fact.fact_id, type(err).__name__, err)
            rec["error"] = error_of(err)
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        return rec

    def run_relation(self, lm, relation: str, facts: Sequence, state: State) -> dict:
        s = self.settings
        ok = [r for r in (located(state, f.fact_id) for f in facts) if r is not None]
        rec = record(self.relation_record, relation=relation, share=None, facts=[r["fact_id"] for r in ok],
                     neurons={})
        if ok:
            low, high = s.kns_per_fact
            share, kns = tune_share([[{tuple(n) for n in p} for p in r["sets"]] for r in ok], s.share, low=low,
                                    high=high, step=s.share_step, tries=s.share_tries, min_prompts=s.min_prompts)
            rec["share"] = share
            rec["neurons"] = {r["fact_id"]: [list(n) for n in k] for r, k in zip(ok, kns)}
        return rec

    # -- the tables ----------------------------------------------------------------------------
    def fact_row(self, fact_id: str, state: State) -> dict:
        r = state.get(self.fact_record, fact_id)
        rel = state.get(self.relation_record, r["relation"])
        kns = knowledge_neurons(state, fact_id, r["relation"])
        sets = r.get("sets")
        return {"subject": r.get("subject"), "answer": r.get("answer"),
                "n_prompts": len(r["prompts"]) if "prompts" in r else None,
                "n_coarse": mean([len(p) for p in sets]) if sets else math.nan,
                "n_neurons": len(kns) if kns is not None else None,
                "share": rel["share"] if rel and kns is not None else math.nan,
                "p_before": mean(r.get("p_before"))}

    def n_prompts(self, fact_id: str, state: State) -> int:
        return len(state.get(self.fact_record, fact_id).get("prompts") or [])

    def prompt_row(self, fact_id: str, index: int, state: State) -> dict:
        r = state.get(self.fact_record, fact_id)
        sets = r.get("sets")
        answer = answers_of(r)[index] if "answer" in r else None
        return {"prompt": r["prompts"][index], "answer": answer, "target": None if answer is None else answer.target,
                "n_coarse": len(sets[index]) if sets else None,
                "p_before": r["p_before"][index] if "p_before" in r else math.nan}

    def relation_row(self, relation: str, facts, state: State) -> dict:
        rel = state.get(self.relation_record, relation)
        if rel is None:
            return {}
        kns = rel["neurons"]
        counts = shared_counts([[tuple(n) for n in k] for k in kns.values()])
        n_loc = len(rel["facts"])
        return {"facts_located": n_loc, "facts_with_neurons": sum(1 for k in kns.values() if k),
                "neurons_per_fact": mean([len(k) for k in kns.values()]),
                "share": rel["share"] if rel["share"] is not None else math.nan,
                "relation_neurons": sum(c >= self.settings.relation_neuron_share * n_loc for c in counts.values()),
                "max_facts_sharing": max(counts.values(), default=0)}

    def tables(self, state: State) -> dict:
        import pandas as pd

        rows = []
        for relation, rel in state.all(self.relation_record).items():
            counts = shared_counts([[tuple(n) for n in k] for k in rel["neurons"].values()])
            for fid, kns in rel["neurons"].items():
                found = [{tuple(n) for n in p} for p in state.get(self.fact_record, fid)["sets"]]
                for l, i in kns:
                    rows.append({"fact_id": fid, "relation": relation, "layer": l, "index": i,
                                 "n_prompts_found": sum((l, i) in p for p in found),
                                 "n_facts_sharing": counts[(l, i)]})
        return {"neurons": pd.DataFrame(rows, columns=NEURON_COLUMNS)}
