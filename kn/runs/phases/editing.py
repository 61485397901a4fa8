"""Phases "update" and "erase" (Dai et al. 2022, section 5; `kn.editing`): per located fact, the
paper's value-slot update towards another object of its relation; per relation, zeroing its most
frequent knowledge neurons. The side facts and measured prompts are the run's facts' prompts in the
record's language (`locate.fact_queries`).

- "update": which facts are edited is the relation's plan: its located facts in a seeded order
  (`kn.editing.update_order`), the first `edits_per_relation` that `kn.editing.plan_update` can plan
  (the model answers a prompt right, the relation has another object); each fact's draws are seeded
  by the fact alone. Record ``update`` = {fact_id, relation, rank (its place in the plan), neurons,
  random_neurons, and `kn.editing.measure_update`'s row}, or {fact_id, relation, rank, error}. Own
  table ``updates`` (`kn.editing.UPDATE_COLUMNS`), the plan's first `edits_per_relation` edits.
- "erase": record ``erasure`` = {relation, neurons, and `kn.editing.measure_erasure`'s row}, or
  {relation, error}. Own table ``erased`` (`kn.editing.ERASE_COLUMNS`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections import Counter
from contextlib import ExitStack
from typing import ClassVar, Sequence

from ... import checks
from ...data.templates import with_object

from ...editing import (ERASE_COLUMNS, LAMBDA1, LAMBDA2, UPDATE_COLUMNS, edit_neurons, measure_erasure,
                        measure_update, plan_erasure, plan_update, run_object, update_order)
from ...likn import fact_likn
from ...localization import shared_counts
from ...probing import batch_stats
from ..state import State
from .base import Phase, error_of, mean, record
from .locate import fact_queries, knowledge_neurons, located, located_facts, neurons_by_language
from .setting import at_least, boolean, digest, fraction, non_negative, phase_settings, setting

log = logging.getLogger(__name__)


class _Edits(Phase):
    """What both phases read: every run fact's (prompt, answer) pairs per language, and each pair's
    answer statistics on the unedited model (every edit restores it)."""

    needs = ("locate",)

    def start(self, lm, facts: Sequence) -> None:
        self._lm, self._facts = lm, facts
        self._items: dict[str, tuple[dict, dict]] = {}
        self._clean: dict = {}
        self._plans: dict = {}

    def wants(self, fact_id: str, state: State) -> bool:
        """A located fact with knowledge neurons that `plan` (the phase's) picks."""
        loc = located(state, fact_id)
        return (loc is not None and knowledge_neurons(state, fact_id, loc["relation"]) is not None
                and fact_id in self.plan(loc["relation"], state))

    def items(self, language: str) -> tuple[dict, dict]:
        """({fact_id: [(prompt, answer), ...]}, {fact_id: relation}) of the facts with usable prompts."""
        if language not in self._items:
            items, relation_of = {}, {}
            for f in self._facts:
                try:
                    prompts, answers, _ = fact_queries(self._lm, f, language, sentence=self.run.of("locate").sentence)
                except ValueError:
                    continue
                items[f.fact_id], relation_of[f.fact_id] = list(zip(prompts, answers)), f.relation
            self._items[language] = (items, relation_of)
        return self._items[language]

    def clean(self, lm, language: str, pairs) -> dict:
        """{pair: answer_stats on the unedited model} for `pairs` (computed once per run)."""
        known = self._clean.setdefault(language, {})
        todo = list(dict.fromkeys(x for x in pairs if x not in known))
        known.update(zip(todo, batch_stats(lm, todo)))  # one batched measurement of the new pairs
        return {x: known[x] for x in pairs}

    def planned(self, relation: str, state: State, limit: int, side_facts: int, choose) -> dict:
        """{fact_id: (rank, kn.editing.Update)}: the relation's located facts in seeded order
        (`kn.editing.update_order`), the first `limit` that `kn.editing.plan_update` can plan through
        `choose(knowledge neurons, the relation's neuron counts, its located facts)` (cached)."""
        plans = self._plans
        key = (relation, state.language)
        if key not in plans:
            kns = {f: knowledge_neurons(state, f, relation) or [] for f in located_facts(state, relation)}
            counts, items = shared_counts(list(kns.values())), self.items(state.language)
            plan: dict = {}
            for fid in update_order([f for f in kns if f in items[0]], relation, self.run.seed):
                if len(plan) >= limit:
                    break
                u = plan_update(self._lm, fid, choose(kns[fid], counts, len(kns)), *items, side_facts=side_facts,
                                seed=self.run.seed)
                if u is not None:
                    plan[fid] = (len(plan), u)
            plans[key] = plan
        return plans[key]

    def tables_of(self, state: State, name: str, columns: Sequence[str], keep=lambda r: True) -> dict:
        import pandas as pd

        rows = [{c: r.get(c) for c in columns} for r in state.all(self.record_type).values()
                if "error" not in r and keep(r)]
        return {name: pd.DataFrame(rows, columns=list(columns))}


@phase_settings
class UpdateSettings:
    """How facts are updated (Dai et al. 2022, 5.1)."""

    lambda1: float = setting(LAMBDA1, "fact updating: the weight on moving a value slot away from the old object",
                             check=non_negative)
    lambda2: float = setting(LAMBDA2, "fact updating: the weight on moving a value slot towards the new object",
                             check=non_negative)
    update_max_share: float = setting(
        0.1, "fact updating leaves out a knowledge neuron of more than this share of the relation's located "
             "facts (one of the fact's alone is kept)", check=fraction)
    update_side_facts: int = setting(5, "side facts measured per update, of its relation and of the others",
                                     check=at_least(0))
    edits_per_relation: int = setting(10, "at most this many facts updated per relation (seeded order)",
                                      check=at_least(1), scope="table")


class Update(_Edits):
    name = "update"
    Settings = UpdateSettings
    fact_record = record_type = "update"
    relation_columns = ("edits", "edit_success", "edit_changed", "edit_random_success")
    table_names = ("updates",)
    summary = (("edit_success", "update succ", ".1%"), ("edit_random_success", "random succ", ".1%"))

    def plan(self, relation: str, state: State) -> dict:
        """{fact_id: (rank, kn.editing.Update)} of the relation's planned updates in `state`'s language."""
        s = self.settings
        return self.planned(relation, state, s.edits_per_relation, s.update_side_facts,
                            lambda kns, counts, n: edit_neurons(kns, counts, n, s.update_max_share))

    def run_fact(self, lm, fact, state: State) -> dict:
        rank, u = self.plan(fact.relation, state)[fact.fact_id]
        s = self.settings

        def edit() -> dict:
            return {"neurons": [list(n) for n in u.neurons], "random_neurons": [list(n) for n in u.random_neurons],
                    **measure_update(lm, u, lambda1=s.lambda1, lambda2=s.lambda2)}
        return self.attempt(record(self.fact_record, fact_id=fact.fact_id, relation=fact.relation, rank=rank), edit)

    def kept(self, r: dict) -> bool:
        return r["rank"] < self.settings.edits_per_relation

    def relation_row(self, relation: str, facts, state: State) -> dict:
        rows = [r for r in state.all(self.fact_record).values()
                if r["relation"] == relation and "error" not in r and self.kept(r)]
        return {"edits": len(rows), "edit_success": mean([r["success"] for r in rows]) if rows else math.nan,
                "edit_changed": mean([r["changed"] for r in rows]) if rows else math.nan,
                "edit_random_success": mean([r["random_success"] for r in rows]) if rows else math.nan}

    def tables(self, state: State) -> dict:
        return self.tables_of(state, "updates", UPDATE_COLUMNS, self.kept)


@phase_settings
class EraseSettings:
    """How relations are erased (Dai et al. 2022, 5.2)."""

    erase_k: int = setting(20, "relation erasing zeroes the value slots of the relation's this many most frequent "
                               "knowledge neurons", check=at_least(1))


class Erase(_Edits):
    name = "erase"
    Settings = EraseSettings
    relation_record = record_type = "erasure"
    relation_columns = ("erase_ppl_rise", "erase_other_ppl_rise")
    table_names = ("erased",)
    summary = (("erase_ppl_rise", "erase PPL x", ".1f"), ("erase_other_ppl_rise", "others' PPL x", ".1f"))

    def run_relation(self, lm, relation: str, facts, state: State) -> dict:
        def erasure() -> dict:
            mine = located_facts(state, relation)
            if not mine:
                raise ValueError(f"relation {relation!r} has no located fact to erase")
            items, relation_of = self.items(state.language)
            e = plan_erasure(relation, [knowledge_neurons(state, f, relation) or [] for f in mine],
                             [x for f in mine if f in items for x in items[f]],
                             [x for f, xs in items.items() if relation_of[f] != relation for x in xs],
                             k=self.settings.erase_k)
            before = self.clean(lm, state.language, e.items + e.other_items)
            return {"neurons": [list(n) for n in e.neurons], **measure_erasure(lm, e, before)}
        return self.attempt(record(self.relation_record, relation=relation), erasure)

    def relation_row(self, relation: str, facts, state: State) -> dict:
        r = state.get(self.relation_record, relation)
        if r is None or "error" in r:
            return {"erase_ppl_rise": math.nan, "erase_other_ppl_rise": math.nan}
        return {"erase_ppl_rise": r["ppl_after"] / r["ppl_before"],
                "erase_other_ppl_rise": r["other_ppl_after"] / r["other_ppl_before"]}

    def tables(self, state: State) -> dict:
        return self.tables_of(state, "erased", ERASE_COLUMNS)


# -- "edit": the edit methods of kn.edits on counterfactual edits, measured as the field does -------------
def check_methods(name: str, v) -> tuple[str, ...]:
    from ...edits import METHODS

    names = (v,) if isinstance(v, str) else tuple(v)
    bad = [m for m in names if m not in METHODS]
    if not names or bad:
        raise checks.ArgumentError(f"{name} must name edit methods of {sorted(METHODS)} (kn.edits.METHODS), got {v!r}")
    return names


def parse_options(name: str, v) -> tuple[str, ...]:
    """("method.setting=value", ...): each method's settings other than its defaults (values as JSON)."""
    opts = (v,) if isinstance(v, str) else tuple(v)
    options(opts, name)
    return opts


def options(opts: Sequence[str], name: str = "edit_options") -> dict[str, dict]:
    """{method: {setting: value}} from "method.setting=value" strings, each method value built once to check it."""
    import json

    from ...edits import METHODS, method

    out: dict[str, dict] = {}
    for o in opts:
        head, eq, value = o.partition("=")
        m, dot, field = head.partition(".")
        if not (eq and dot and field) or m not in METHODS:
            raise checks.ArgumentError(f"{name}: {o!r} must read method.setting=value with a method of {sorted(METHODS)}")
        try:
            out.setdefault(m, {})[field] = json.loads(value)
        except ValueError:
            out.setdefault(m, {})[field] = value
    for m, kw in out.items():
        method(m, **kw)
    return out


def sizes(name: str, v) -> tuple[int, ...]:
    """Batch sizes: integers >= 2, each once, ascending."""
    out = (v,) if isinstance(v, int) else tuple(v)
    bad = [x for x in out if isinstance(x, bool) or not isinstance(x, int) or x < 2]
    if bad:
        raise checks.ArgumentError(f"{name} must be batch sizes, integers >= 2 (e.g. 10 100); got {bad}")
    return tuple(sorted(set(out)))


def limits(name: str, v) -> tuple[int, ...]:
    """Batch limits: integers >= 0 (one number or several), in the order given."""
    out = (v,) if isinstance(v, int) else tuple(v)
    bad = [x for x in out if isinstance(x, bool) or not isinstance(x, int) or x < 0]
    if not out or bad:
        raise checks.ArgumentError(f"{name} must be batch counts, integers >= 0 (e.g. 10, or 10 1: one per size of "
                                   f"edit_batches); got {bad or list(out)}")
    return out


def neuron_sets(name: str, v) -> tuple[str, ...]:
    """Names of `kn.edits.NEURON_SETS`, each once, in that order (the same sets give the same record key)."""
    from ...edits import NEURON_SETS

    try:
        got = (v,) if isinstance(v, str) else tuple(v)
        bad = [x for x in got if x not in NEURON_SETS]
    except TypeError:
        got, bad = (), [v]
    if not got or bad:
        raise checks.ArgumentError(f"{name} must name neuron sets of {list(NEURON_SETS)} (own: the fact's knowledge "
                                   f"neurons in the edit's language; likn: those it has in every language of the run "
                                   f"with neurons; specific: own but not likn), got {v!r}")
    return tuple(x for x in NEURON_SETS if x in got)


@phase_settings
class EditSettings:
    """Counterfactual edits with each edit method (`kn.edits`), measured as the field measures them."""

    # edit_batch (each relation's edits at once) became edit_batches (sizes, across relations): a run that
    # recorded it resumes, its single edits kept
    retired: ClassVar[tuple] = ("edit_batch",)

    edit_methods: tuple = setting(("dai", "scale", "ft", "rome", "kn-opt"), "the edit methods compared on the same edits",
                                  check=check_methods, cli_type=str, nargs="+")
    edit_options: tuple = setting((), "method.setting=value: a method's setting other than its default "
                                      "(e.g. rome.layer=4)", check=parse_options, cli_type=str, nargs="*")
    edit_facts: int = setting(10, "at most this many facts edited per relation (seeded order)", check=at_least(1))
    edit_prompts: int = setting(1, "the first this many of a fact's right prompts make the edit; the others are "
                                   "held out for generalization", check=at_least(1))
    edit_batches: tuple = setting((), "batch sizes: also edit this many planned facts at once (drawn from every "
                                      "relation in a seeded order), per method, in as many disjoint batches of each "
                                      "size as the planned edits fill (table edit_batches)",
                                  check=sizes, scope="relation", cli_type=int, nargs="*")
    edit_fluency: int = setting(100, "fluency: tokens sampled from each edit's editing prompt after the edit "
                                     "(top-k 5, seeded, the prompt counted, as ROME); 0 skips it", check=at_least(0))
    edit_side_facts: int = setting(5, "neighbours per edit (facts of its relation and of others) for locality, "
                                      "and as many other facts whose prompts kn-opt's KL term keeps",
                                   check=at_least(0))
    edit_keep_relation: int = setting(0, "kn-opt's KL term also keeps the first prompt of this many other facts of "
                                         "the edit's relation that are not its neighbours (0: only other relations')",
                                      check=at_least(0), added=True)
    edit_batch_limit: tuple = setting((0,), "at most this many batches of each size of edit_batches, the first of "
                                            "the seeded order: one number for every size, or one per size, the "
                                            "smallest size first and the last number for the larger sizes (0: every "
                                            "batch the planned edits fill)",
                                      check=limits, scope="table", cli_type=int, nargs="*", added=True)
    edit_singles: bool = setting(True, "edit each planned fact alone (table edits); off: only the batches of "
                                       "edit_batches (a study in parts: the batches a run of their own)",
                                 check=boolean, scope="table", added=True)
    edit_neuron_sets: tuple = setting(
        ("own",), "the neuron methods (dai, scale, kn-opt) edit each fact through each of these sets of its neurons: "
                  "own (its knowledge neurons in the edit's language), likn (those it has in every language of the "
                  "run with neurons), specific (own but not likn); likn and specific need a run in several "
                  "languages; a fact whose set is empty gets no row for it (column neurons_from)",
        check=neuron_sets, cli_type=str, nargs="+", added=True)


# neurons_from: the set of the fact's neurons a neuron method edited through (`kn.edits.NEURON_SETS`; "own" also for its
# rows recorded before the sets), empty for a method that edits a weight matrix (ft, rome)
EDIT_COLUMNS = ["relation", "fact_id", "method", "neurons_from", "layer", "old", "new", "n_neurons", "n_params", "n_edit_prompts", "n_held", "n_neighbours",
                "reliability", "generalization", "locality", "locality_relation", "locality_other", "locality_kl", "old_kept",
                "n_reverse", "portability", "portability_before", "reverse_known", "reverse_kept",
                "n_synonym", "synonymy", "synonymy_before", "synonym_known", "synonym_kept",
                "fluency", "fluency_before", "edit_seconds", "seconds"]
# an edit (single: fact_id, batch 1; a batch: its group) a method could not make or measure (its error)
FAILURE_COLUMNS = ["method", "neurons_from", "fact_id", "relation", "batch", "group", "error", "message"]
# a single edit asked in each other language of the run (`Edit.crosslingual`); "language" (the edit's) follows fact_id
CROSSLINGUAL_COLUMNS = ["fact_id", "relation", "method", "neurons_from", "measured", "n_prompts", "old", "new", "reliability",
                        "reliability_before", "old_known", "old_kept"]


def side_readings(lm, sides: dict[str, list]) -> dict[str, list]:
    """{side: `kn.edits.metrics.readings` of each of its (prompt, answer) pairs}, every side in one batch."""
    from ...edits.metrics import readings_of

    got = iter(readings_of(lm, [pair for v in sides.values() for pair in v]))
    return {k: [next(got) for _ in v] for k, v in sides.items()}


def crosslingual_case(lm, fact_id: str, new_fact: str | None, items: dict) -> dict | None:
    """One other language's reading of an edit of `fact_id` towards `new_fact`'s object, before the edit:
    {items: the fact's (prompt, answer) pairs there, old, new: the objects there, before: the new object's
    accuracy, known: the old one's}; None where either fact has no usable prompt or the objects are the same.
    items: {fact_id: (prompt, answer) pairs} of that language (`_Edits.items`)."""
    from ...edits.metrics import accuracy

    if new_fact is None or fact_id not in items or new_fact not in items:
        return None
    pairs, old, new = items[fact_id], run_object(items[fact_id]), run_object(items[new_fact])
    if old == new:
        return None
    return {"items": pairs, "old": old, "new": new, "known": accuracy(lm, pairs),
            "before": accuracy(lm, [(p, with_object(a, new)) for p, a in pairs])}


def crosslingual_rows(lm, cases: dict) -> list[dict]:
    """Per other language {language: `crosslingual_case`}, the edited model's row: measured (the language),
    n_prompts, old, new, reliability (the new object's token accuracy on the fact's prompts there), its
    value before the edit, old_known and old_kept (the old object's, before and after)."""
    from ...edits.metrics import accuracy

    return [{"measured": l, "n_prompts": len(x["items"]), "old": x["old"], "new": x["new"],
             "reliability": accuracy(lm, [(p, with_object(a, x["new"])) for p, a in x["items"]]),
             "reliability_before": x["before"], "old_known": x["known"], "old_kept": accuracy(lm, x["items"])}
            for l, x in cases.items()]


class Edit(_Edits):
    """Per located fact of a relation's plan (`edit_facts` in seeded order, as "update" plans them): a
    counterfactual target (another object of the relation whose first token differs, so the model does
    not predict it), the edit prompts and the held paraphrases, the neighbours; then every method of
    `edit_methods` edits the fact alone and is measured. Record ``edit`` = {fact_id, relation, new,
    rows: [one row per method, or {method, error}]}. Own table ``edits`` (`EDIT_COLUMNS`; layer: the edited FFN of a one-layer method (rome, traced or
    given; ft), empty for the neuron methods; edit_seconds: making
    the edit, seconds: making and measuring it). For each size n of `edit_batches`, the run's planned edits
    in a seeded order are cut into batches of n (the rest left out), each a group "n:i"; record
    ``edit_group`` = {group, batch, facts, rows}: every method edits the batch's facts at once and each fact
    is measured (table ``edit_batches``, with the batch size and group; edit_seconds and seconds the whole
    batch's). A method that could not make or
    measure an edit (it raised: e.g. its edited model's logits are NaN) has a row {method, error} (with
    batch and group in a batch's record) instead, in table ``edit_failures`` (`FAILURE_COLUMNS`).

    Cross-lingual reliability (a run in several languages): each single edit, made with prompts of the
    record's language, is also asked in every other language of the run where the fact and the new
    object's fact (`kn.editing.Update.new_fact`) have usable prompts and other objects: the record holds
    ``new_fact`` and each method's row ``crosslingual`` = [`crosslingual_rows`' rows], table
    ``edit_crosslingual`` (`CROSSLINGUAL_COLUMNS`, "language" the edit's, "measured" the other). Batches
    are not asked across languages. A one-language run's records and tables are as before (the table empty).

    Neuron sets (`edit_neuron_sets`; a run in several languages): each neuron method (`kn.edits.uses_neurons`:
    dai, scale, kn-opt) also edits the fact alone through its LIKN (its knowledge neurons in every language
    of the run with neurons, `kn.likn.fact_likn`, as the crossedit phase takes them) and through its
    language-specific neurons (those of the edit's language that are not LIKN), on the same case, measured
    and asked in the other languages alike: rows {method, neurons_from: "likn" or "specific", ...}, and the
    record's ``neuron_sets`` = {set: its size} (0: no row for it, not an error; counted in the log as the
    tables are written, `Edit.sets_counted`, and by the summaries' edits per set).
    ft and rome edit once. Rows without neurons_from were made through the "own" set (the default, whose
    records and keys are as before); in a one-language run likn and specific are empty, so no row."""

    name = "edit"
    Settings = EditSettings

    @classmethod
    def resolved(cls, settings, run):
        """edit_options with every setting of every chosen method written out (its defaults included), so
        config.json says what each method ran with and a changed default recomputes its records."""
        import dataclasses
        import json

        from ...edits import method

        opts = options(settings.edit_options)
        full = tuple(f"{name}.{k}={json.dumps(v)}" for name in settings.edit_methods
                     for k, v in dataclasses.asdict(method(name, **opts.get(name, {}))).items())
        return dataclasses.replace(settings, edit_options=full)
    fact_record = record_type = "edit"
    group_record = "edit_group"
    table_names = ("edits", "edit_batches", "edit_crosslingual", "edit_failures")

    def measures(self) -> dict:
        """In several languages the records hold the cross-lingual rows, which came after such runs were
        recorded: part of their key, so those runs' edits are recomputed (one language: keys as before)."""
        return {"crosslingual": 1} if len(self.run.languages) > 1 else {}

    def start(self, lm, facts: Sequence) -> None:
        from ...edits.portability import reverse_templates

        super().start(lm, facts)
        self._fact = {f.fact_id: f for f in facts}
        self._reverse_templates = reverse_templates(facts)

    def consequence_items(self, lm, fact_id: str, obj: str, language: str) -> dict[str, list]:
        """{"reverse": ..., "synonym": ...}: (prompt, answer) pairs of the reverse query about `obj` and of
        the synonym query for `obj` (`kn.edits.portability`); [] where there is none."""
        from ...edits.portability import reverse_fact, synonym_fact

        fact = self._fact[fact_id]
        out = {}
        for kind, q in (("reverse", reverse_fact(fact, obj, language, self._reverse_templates)),
                        ("synonym", synonym_fact(fact, obj, language))):
            try:
                prompts, answers, _ = fact_queries(lm, q, language) if q else ([], [], None)
            except ValueError:
                prompts, answers = [], []
            out[kind] = list(zip(prompts, answers))
        return out

    def plan(self, relation: str, state: State) -> dict:
        """{fact_id: (rank, kn.editing.Update)}: the relation's planned edits in `state`'s language."""
        return self.planned(relation, state, self.settings.edit_facts, self.settings.edit_side_facts,
                            lambda kns, counts, n: kns)

    def wants(self, fact_id: str, state: State) -> bool:
        return self.settings.edit_singles and super().wants(fact_id, state)

    def keep_prompts(self, u, language: str) -> tuple[str, ...]:
        """The first prompts of facts that are not neighbours of the edit (kn-opt keeps them): `edit_side_facts`
        of other relations, then `edit_keep_relation` of its own (not the fact itself)."""
        items, relation_of = self.items(language)
        rng = random.Random(f"{self.run.seed}|keep|{u.fact_id}")

        def draw(same: bool, n: int) -> list[str]:
            measured = set(u.intra if same else u.inter)
            pool = sorted(f for f in items if (relation_of[f] == u.relation) == same and f != u.fact_id
                          and not measured & set(items[f]))
            return rng.sample(pool, min(n, len(pool)))
        chosen = draw(False, self.settings.edit_side_facts)
        if self.settings.edit_keep_relation:
            chosen += draw(True, self.settings.edit_keep_relation)
        return tuple(items[f][0][0] for f in chosen)

    def case(self, lm, u, language: str) -> dict:
        """One planned edit ready to measure: its request, edit prompts, held paraphrases, neighbours and
        their top tokens on the unedited model."""
        from ...edits import Request
        from ...edits.metrics import accuracy

        n = self.settings.edit_prompts
        made, held = u.prompts[:n], u.prompts[n:]
        a0 = made[0][1]
        req = Request(tuple(p for p, _ in made), a0, with_object(a0, u.new),
                      self._fact[u.fact_id].subject.get(language), tuple(u.neurons), self.keep_prompts(u, language))
        sides = {"relation": list(u.intra), "other": list(u.inter)}
        new, old = (self.consequence_items(lm, u.fact_id, o, language) for o in (u.new, u.old))
        queries = {kind: {"new": new[kind], "old": old[kind]} for kind in new}  # kind -> object -> items
        return {"u": u, "request": req, "made": made, "held": held, "sides": sides, "queries": queries,
                "before": side_readings(lm, sides),
                "queries_before": {kind: {o: accuracy(lm, v) for o, v in q.items()} for kind, q in queries.items()},
                "fluency_before": math.nan}  # `cases` or `fluency_together` fill it in

    def cases(self, lm, us: Sequence, language: str) -> list[dict]:
        """`case` of each planned edit, their fluency before the edit decoded together."""
        out = [self.case(lm, u, language) for u in us]
        for c, f in zip(out, self.fluency(lm, out)):
            c["fluency_before"] = f
        return out

    def fluency(self, lm, cases: Sequence[dict]) -> list[float]:
        """ROME's generation entropy of a text sampled from each case's first editing prompt (seeded by the
        run and the fact), the texts decoded together."""
        from ...edits.metrics import fluency, samples

        n = self.settings.edit_fluency
        if not n or lm.masked:
            return [math.nan] * len(cases)
        seeds = [int(digest({"seed": self.run.seed, "fluency": c["u"].fact_id}), 16) % 2**31 for c in cases]
        return [fluency(t) for t in samples(lm, [c["made"][0][0] for c in cases], n, seeds=seeds)]

    def measure(self, lm, name: str, cases: Sequence[dict], together: bool = False) -> list[dict]:
        """Method `name` edits every case at once; each case's metrics, and the edit's seconds. together (one
        case): an edit that amounts to a change of value slots (it only writes them, or `Method.as_row`) leaves
        its fluency to `fluency_together`, its row holding the change (``_slot_deltas``) instead."""
        from ...edits import edit, method
        from ...edits.metrics import accuracy, agreement, kl
        from ...edits.rows import Row, slot_deltas, slots_of
        from ...hooks import count

        m = method(name, **options(self.settings.edit_options).get(name, {}))
        unedited = slots_of(lm) if together and m.writes_slots and len(cases) == 1 else None
        rows = []
        with ExitStack() as stack:
            hooks = count(lm.model)
            t0 = time.perf_counter()
            stack.enter_context(edit(lm, m, [c["request"] for c in cases]))
            seconds = time.perf_counter() - t0
            if unedited is not None and count(lm.model) == hooks:
                deltas = Row(slot_deltas(lm, unedited))
            else:
                deltas = m.as_row(lm, [c["request"] for c in cases]) if together and len(cases) == 1 else None
            fluencies = [math.nan] if deltas is not None else self.fluency(lm, cases)
            for c, text_fluency in zip(cases, fluencies):
                new = c["u"].new
                after = side_readings(lm, c["sides"])
                b, a = ({k: [r[0] for r in v] for k, v in x.items()} for x in (c["before"], after))
                both = [r[1] for v in c["before"].values() for r in v], [r[1] for v in after.values() for r in v]
                rows.append({"fact_id": c["u"].fact_id,
                             "reliability": accuracy(lm, [(p, with_object(a, new)) for p, a in c["made"]]),
                             "generalization": accuracy(lm, [(p, with_object(a, new)) for p, a in c["held"]]),
                             "old_kept": accuracy(lm, list(c["made"])),
                             "locality_relation": agreement(b["relation"], a["relation"]),
                             "locality_other": agreement(b["other"], a["other"]),
                             "locality": agreement(b["relation"] + b["other"], a["relation"] + a["other"]),
                             "locality_kl": kl(*both),
                             **self.consequences(lm, c),
                             "fluency": text_fluency,
                             "fluency_before": c["fluency_before"]})
                if "crosslingual" in c:
                    rows[-1]["crosslingual"] = crosslingual_rows(lm, c["crosslingual"])
                if deltas is not None:
                    rows[-1]["_slot_deltas"] = deltas
        n_neurons, n_params = m.touched(lm, [c["request"] for c in cases])
        for r, chosen in zip(rows, m.chosen(lm, [c["request"] for c in cases])):
            r.update(chosen)  # e.g. the edited layer (rome's traced one): column "layer" where a method has one
            r.update(n_neurons=n_neurons, n_params=n_params, edit_seconds=round(seconds, 3))
        return rows

    def fluency_together(self, lm, c: dict, rows: list[dict]) -> None:
        """Fill in the fluency of `rows` (one case's, by several methods) whose edits came as value-slot
        changes, and every row's fluency before the edit, from one decode: row 0 the unedited model, row
        k the k-th change (`kn.edits.rows.per_row`), all from the case's prompt and seed."""
        from ...edits.rows import per_row

        waiting = [r for r in rows if "_slot_deltas" in r]
        deltas = [r.pop("_slot_deltas") for r in waiting]
        try:
            with per_row(lm, [{}] + deltas):
                before, *after = self.fluency(lm, [c] * (1 + len(deltas)))
        except FloatingPointError:  # a change leaves nothing to sample from: each decoded alone, that row failed
            with per_row(lm, [{}]):
                before, = self.fluency(lm, [c])
            after = []
            for r, d in zip(waiting, deltas):
                try:
                    with per_row(lm, [d]):
                        after.append(self.fluency(lm, [c])[0])
                except FloatingPointError as err:
                    log.warning("edit of %s, method %s: %s", c["u"].fact_id, r["method"], err)
                    r["error"] = error_of(err)
                    after.append(math.nan)
        for r in rows:
            if "error" not in r:
                r["fluency_before"] = before
        for r, f in zip(waiting, after):
            r["fluency"] = f

    # the consequence queries' columns: kind -> (after, before, the old object's before, ... after)
    CONSEQUENCES = {"reverse": ("portability", "portability_before", "reverse_known", "reverse_kept"),
                    "synonym": ("synonymy", "synonymy_before", "synonym_known", "synonym_kept")}

    def consequences(self, lm, c: dict) -> dict:
        """Each consequence query's accuracy on the edited model, for the new object and the old one,
        beside the same before the edit."""
        from ...edits.metrics import accuracy

        out = {}
        for kind, (after, before, known, kept) in self.CONSEQUENCES.items():
            q, b = c["queries"][kind], c["queries_before"][kind]
            out |= {after: accuracy(lm, q["new"]), before: b["new"], known: b["old"], kept: accuracy(lm, q["old"])}
        return out

    @staticmethod
    def about(c: dict) -> dict:
        u = c["u"]
        return {"old": u.old, "new": u.new, "n_edit_prompts": len(c["made"]), "n_held": len(c["held"]),
                "n_neighbours": len(u.intra) + len(u.inter), "n_reverse": len(c["queries"]["reverse"]["new"]),
                "n_synonym": len(c["queries"]["synonym"]["new"])}

    def crosslingual(self, lm, u, language: str) -> dict:
        """{other language of the run: `crosslingual_case`} where the edit `u` can be asked there."""
        cases = {l: crosslingual_case(lm, u.fact_id, u.new_fact, self.items(l)[0])
                 for l in self.run.languages if l != language}
        return {l: x for l, x in cases.items() if x is not None}

    def neuron_sets(self, u, state: State) -> dict[str, tuple]:
        """{set of `edit_neuron_sets`: the fact's neurons in it}: own (the plan's, its knowledge neurons in
        `state`'s language), likn (those of own it has in every language of the run with neurons, empty in a
        one-language run), specific (own but not likn; empty in a one-language run)."""
        own, sets = tuple(u.neurons), {}
        if len(self.run.languages) > 1 and set(self.settings.edit_neuron_sets) - {"own"}:
            shared = fact_likn(neurons_by_language(state, u.fact_id, u.relation))
            sets = {"likn": tuple(n for n in own if n in shared), "specific": tuple(n for n in own if n not in shared)}
        return {s: own if s == "own" else sets.get(s, ()) for s in self.settings.edit_neuron_sets}

    def run_fact(self, lm, fact, state: State) -> dict:
        from ...edits import uses_neurons

        _, u = self.plan(fact.relation, state)[fact.fact_id]
        c = self.case(lm, u, state.language)
        several = len(self.run.languages) > 1
        if several:
            c["crosslingual"] = self.crosslingual(lm, u, state.language)
        sets = self.neuron_sets(u, state)
        # (method, its row's neurons_from (None: own, as rows were before the sets), the case it edits)
        made = [(name, None, c) for name in self.settings.edit_methods if "own" in sets or not uses_neurons(name)]
        made += [(name, s, {**c, "request": dataclasses.replace(c["request"], neurons=ns)})
                 for s, ns in sets.items() if s != "own" and ns
                 for name in self.settings.edit_methods if uses_neurons(name)]
        rows = [self.attempt({"method": name} | ({"neurons_from": s} if s else {}),
                             lambda name=name, x=x: self.measure(lm, name, [x], together=True)[0])
                for name, s, x in made]
        self.fluency_together(lm, c, rows)
        extra = {"neuron_sets": {s: len(ns) for s, ns in sets.items()}} if set(sets) != {"own"} else {}
        return record(self.fact_record, fact_id=fact.fact_id, relation=fact.relation, **self.about(c), rows=rows,
                      **({"new_fact": u.new_fact} if several else {}), **extra)

    def batches(self, state: State) -> dict[str, list]:
        """{group "n:i": [kn.editing.Update, ...]}: the planned edits of every relation, in an order seeded by
        the run, cut into disjoint batches of each size of `edit_batches` (the rest left out), at most
        `edit_batch_limit` of a size (its number for that size; the first ones: a limit never changes a batch)."""
        planned = [u for relation in sorted({f.relation for f in self._facts})
                   for _, u in sorted(self.plan(relation, state).values(), key=lambda x: x[0])]
        random.Random(f"{self.run.seed}|edit batches").shuffle(planned)
        given = self.settings.edit_batch_limit
        limit = {n: given[min(k, len(given) - 1)] or len(planned) for k, n in enumerate(self.settings.edit_batches)}
        return {f"{n}:{i}": planned[i * n:(i + 1) * n] for n in self.settings.edit_batches
                for i in range(min(limit[n], len(planned) // n))}

    def groups(self, facts, state: State) -> list[str]:
        return list(self.batches(state)) if self.settings.edit_batches else []

    def run_group(self, lm, group: str, facts, state: State) -> dict:
        """One batch: every method edits its facts at once; each fact measured."""
        members = self.batches(state)[group]
        cases = self.cases(lm, members, state.language)
        about = {c["u"].fact_id: {"relation": c["u"].relation, **self.about(c)} for c in cases}
        rows = []
        for name in self.settings.edit_methods:
            got = self.attempt({"method": name, "batch": len(cases), "group": group},
                               lambda name=name: {"facts": self.measure(lm, name, cases)})
            if "error" in got:
                rows.append(got)
            else:
                rows += [{"method": name, "batch": len(cases), "group": group, **about[r["fact_id"]], **r,
                          "seconds": got["seconds"]} for r in got["facts"]]
        return record(self.group_record, group=group, batch=len(cases), facts=[u.fact_id for u in members], rows=rows)

    def sets_counted(self, state: State) -> dict:
        """{neuron set: {"facts": edits made through it, "empty": edits whose set was empty (no row)}} over
        `state`'s fact records with ``neuron_sets``; said (logged) whenever the counts change."""
        counts: dict = {}
        for r in state.all(self.fact_record).values():
            for s, n in r.get("neuron_sets", {}).items():
                counts.setdefault(s, Counter({"facts": 0, "empty": 0}))["facts" if n else "empty"] += 1
        counts = {s: dict(c) for s, c in counts.items()}
        told = self.__dict__.setdefault("_told_sets", {})
        if counts and counts != told.get(state.language):
            told[state.language] = counts
            log.info("edit (%s): edits per neuron set (no row where the fact's set is empty): %s", state.language,
                     "; ".join(f"{s} {c['facts']} ({c['empty']} empty)" for s, c in counts.items()))
        return counts

    def tables(self, state: State) -> dict:
        import pandas as pd

        from ...edits import uses_neurons

        def row(m: dict, **fields) -> dict:  # a method's row, its neuron set named ("own" where not recorded)
            return {**fields, **m, "neurons_from": m.get("neurons_from") or ("own" if uses_neurons(m["method"]) else None)}

        def rows_of(kind: str, columns) -> list[dict]:
            return [{c: x.get(c, r.get(c)) for c in columns} for r in state.all(kind).values() if "error" not in r
                    for x in (row(m) for m in r["rows"] if "error" not in m)]
        batch_columns = EDIT_COLUMNS[:4] + ["batch", "group"] + EDIT_COLUMNS[4:]
        crosslingual = [row({"method": m["method"], "neurons_from": m.get("neurons_from"), **x}, fact_id=r["fact_id"],
                            relation=r["relation"]) for r in state.all(self.fact_record).values() if "error" not in r
                        for m in r["rows"] if "error" not in m for x in m.get("crosslingual", ())]
        failures = [{**row({"method": m["method"], "neurons_from": m.get("neurons_from")}), "fact_id": r.get("fact_id"),
                     "relation": r.get("relation"), "batch": m.get("batch", r.get("batch", 1)),
                     "group": m.get("group", r.get("group")),
                     "error": m["error"]["type"], "message": m["error"]["message"]}
                    for kind in (self.fact_record, self.group_record) for r in state.all(kind).values()
                    if "error" not in r for m in r["rows"] if "error" in m]
        self.sets_counted(state)
        return {"edits": pd.DataFrame(rows_of(self.fact_record, EDIT_COLUMNS), columns=EDIT_COLUMNS),
                "edit_batches": pd.DataFrame(rows_of(self.group_record, batch_columns), columns=batch_columns),
                "edit_crosslingual": pd.DataFrame(crosslingual, columns=CROSSLINGUAL_COLUMNS),
                "edit_failures": pd.DataFrame(failures, columns=FAILURE_COLUMNS)}
