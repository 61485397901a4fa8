"""Fact-checking with degenerate knowledge neurons (Chen et al. 2024): the model-facing part, done by
the run phase "statements" (`kn.runs.phases.statements`: `kn.run(..., phases=("locate", "degenerate",
"statements"))`, its table `res.statements`).

From a run's "degenerate" records: per relation, a seeded split of its facts (`kn.factcheck.split`)
and the neuron sets a statement is scored on, all fixed before any statement is scored (`plan_relation`):

- ``dkn``: the relation's DKN set, from the train facts' degenerate pairs (`kn.factcheck.dkn_set`);
- ``kn``: every knowledge neuron of the train facts (does degeneracy matter?);
- ``random``: `n_random` sets of as many neurons as ``dkn``, drawn uniformly over the model's neurons.

Each fact, train and test, gives two statements: its prompt with the true object and with a wrong
one (a same-relation distractor of the data, else another fact's object of the relation; seeded per
fact, `wrong_object`). `score_fact` attributes each statement's object with the run's attribution
settings and keeps P(object), the first token's rank, the attributions of the ``dkn`` neurons and the
mean over ``kn`` and over each ``random`` set. `kn.factcheck.evaluate` turns the table into detectors
and metrics.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from . import checks
from .data.templates import with_object
from .factcheck import dkn_set, split
from .neuron import Neuron

COLUMNS = ["fact_id", "relation", "split", "kind", "object", "p", "rank", "dkn_mean", "kn_mean", "dkn", "random"]


@dataclass(frozen=True)
class FactCheck:
    """How statements are made: the share of each relation's facts held out for test, the seed (split,
    wrong objects, random sets), the DKN rule's ratio, how many of a fact's prompts a statement
    averages over (the paper: one), and how many random neuron sets are drawn."""

    test: float = 0.2
    seed: int = 0
    ratio: float = 0.7
    prompts: int = 1
    n_random: int = 10

    def __post_init__(self):
        checks.number(self.test, "test", low=0.0, high=1.0)
        checks.integer(self.seed, "seed")
        checks.number(self.ratio, "ratio", low=0.0, high=1.0)
        checks.integer(self.prompts, "prompts", low=1)
        checks.integer(self.n_random, "n_random", low=0)


@dataclass(frozen=True)
class RelationPlan:
    """One relation's split and neuron sets."""

    relation: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    dkn: tuple[Neuron, ...]
    kn: tuple[Neuron, ...]
    random: tuple[tuple[Neuron, ...], ...]


def plan_relation(relation: str, pairs: Mapping[str, Sequence[tuple[Neuron, Neuron]]],
                  neurons: Mapping[str, Sequence[Neuron]], s: FactCheck, *, n_layers: int, width: int) -> RelationPlan:
    """The plan of one relation from its measured facts' degenerate pairs and knowledge neurons
    ({fact_id: ...}, in run order)."""
    train, test = split(list(pairs), test=s.test, seed=s.seed, key=relation)
    dkn = tuple(dkn_set([pairs[f] for f in train], s.ratio))
    kn = tuple(sorted({tuple(n) for f in train for n in neurons.get(f, ())}))
    rng = np.random.default_rng([s.seed, int(hashlib.sha256(relation.encode()).hexdigest()[:8], 16)])
    rand = tuple(tuple(sorted((int(i // width), int(i % width))
                              for i in rng.choice(n_layers * width, len(dkn), replace=False)))
                 for _ in range(s.n_random if dkn else 0))
    return RelationPlan(relation, tuple(train), tuple(test), dkn, kn, rand)


def wrong_object(fact_id: str, plan: RelationPlan, objects: Mapping[str, str], distractors: Sequence[str],
                 seed: int) -> str | None:
    """A wrong object for a planned fact: one of its distractors, else another planned fact's object of
    the relation; seeded per fact; None when the relation offers none."""
    mine = objects[fact_id]
    cands = [d for d in distractors if d.strip() != mine]
    if not cands:
        ids = plan.train + plan.test
        cands = sorted({objects[g] for g in ids if objects[g] != mine})
    return random.Random(f"{seed}|wrong|{fact_id}").choice(cands) if cands else None


def score_fact(lm, queries: Sequence, plan: RelationPlan, part: str, wrong: str | None, attribution) -> list[dict]:
    """The fact's statements (true, and false with `wrong`), each averaged over `queries` ((prompt,
    answer) pairs): P(object), its rank, the ``dkn`` neurons' attributions and the mean over ``kn`` and
    each ``random`` set."""
    from .attribution import scores
    from .probing import answer_stats

    rows = []
    for kind, obj in (("true", None), ("false", wrong)):
        if obj is None and kind == "false":
            continue
        total, probs, ranks = 0, [], []
        for prompt, a in queries:
            ans = a if obj is None else with_object(a, obj)
            total = total + scores(lm, prompt, ans, attribution).float()
            pr, rk = answer_stats(lm, prompt, ans)
            probs.append(pr)
            ranks.append(rk)
        sc = (total / len(queries)).cpu().numpy()
        at = lambda ns: [float(sc[l, i]) for l, i in ns]  # noqa: E731
        rows.append({"kind": kind, "object": (obj or queries[0][1]).strip(), "split": part,
                     "p": float(np.mean(probs)), "rank": float(np.mean(ranks)), "dkn": at(plan.dkn),
                     "kn_mean": float(np.mean(at(plan.kn))) if plan.kn else None,
                     "random": [float(np.mean(at(r))) for r in plan.random]})
    return rows


def _fact_pairs(res) -> dict[str, list[tuple[Neuron, Neuron]]]:
    """{fact_id: its degenerate pairs} for the facts the "degenerate" phase measured."""
    if "dkn_pairs" not in res.facts.columns:
        raise checks.ArgumentError(
            f"the run in {res.out_dir} has no 'degenerate' phase (phases {list(res.settings.phases)}); "
            "run it with phases=('locate', 'verify', 'degenerate') (kn run --phases locate,verify,degenerate)")
    done = res.facts[res.facts.dkn_pairs.notna()]
    out = {f: [] for f in done.fact_id}
    for r in res.tables["degenerate_pairs"].itertuples():
        if r.fact_id in out:
            out[r.fact_id].append(((int(r.layer_a), int(r.index_a)), (int(r.layer_b), int(r.index_b))))
    return out


def plan(res, settings: FactCheck | None = None, *, n_layers: int, width: int) -> dict[str, RelationPlan]:
    """Every relation's `RelationPlan` of a finished run with the "degenerate" phase (relations with
    fewer than two measured facts left out): what the "statements" phase scores on."""
    s = settings or FactCheck()
    pairs = _fact_pairs(res)
    rel = res.relation_of()
    out = {}
    for r in dict.fromkeys(rel[f] for f in pairs):
        ids = {f: pairs[f] for f in pairs if rel[f] == r}
        if len(ids) >= 2:
            out[r] = plan_relation(r, ids, {f: res.fact_neurons(f) for f in ids}, s, n_layers=n_layers, width=width)
    return out


def table(records):
    """The statements table of the "statements" phase's records (`kn.runs.phases.statements`)."""
    import pandas as pd

    rows = []
    for r in records:
        for row in r["rows"]:
            d = row["dkn"]
            rows.append({"fact_id": r["fact_id"], "relation": r["relation"], "split": row["split"],
                         "kind": row["kind"], "object": row["object"], "p": row["p"], "rank": row["rank"],
                         "dkn_mean": float(np.mean(d)) if d else np.nan,
                         "kn_mean": np.nan if row["kn_mean"] is None else row["kn_mean"],
                         "dkn": d, "random": row["random"]})
    return pd.DataFrame(rows, columns=COLUMNS)
