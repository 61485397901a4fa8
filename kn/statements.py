"""Fact-checking with degenerate knowledge neurons (Chen et al. 2024): the model-facing part.

From a run with the "degenerate" phase: per relation, a seeded split of its facts (`kn.factcheck.split`)
and the neuron sets a statement is scored on, all fixed before any statement is scored (`plan`):

- ``dkn``: the relation's DKN set, from the train facts' degenerate pairs (`kn.factcheck.dkn_set`);
- ``kn``: every knowledge neuron of the train facts (does degeneracy matter?);
- ``random``: `n_random` sets of as many neurons as ``dkn``, drawn uniformly over the model's neurons.

Each fact, train and test, gives two statements: its prompt with the true object and with a wrong
one (a same-relation distractor of the data, else another fact's object of the relation; seeded per
fact). `score_statements` attributes each statement's object with the run's attribution settings and
keeps P(object), the first token's rank, the attributions of the ``dkn`` neurons and the mean over
``kn`` and over each ``random`` set; journaled per fact in the run directory (`JOURNAL`), so an
interrupted call resumes. `kn.factcheck.evaluate` turns the table into detectors and metrics.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checks
from .data.templates import with_object
from .experiment import journaled, read_journal
from .factcheck import dkn_set, split
from .neuron import Neuron

JOURNAL = "factcheck.jsonl"
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
    """Every relation's `RelationPlan` (relations with fewer than two measured facts left out)."""
    s = settings or FactCheck()
    pairs = _fact_pairs(res)
    rel = res.relation_of()
    out = {}
    for r in dict.fromkeys(rel[f] for f in pairs):
        ids = [f for f in pairs if rel[f] == r]
        if len(ids) < 2:
            continue
        train, test = split(ids, test=s.test, seed=s.seed, key=r)
        dkn = tuple(dkn_set([pairs[f] for f in train], s.ratio))
        kn = tuple(sorted({n for f in train for n in res.fact_neurons(f)}))
        rng = np.random.default_rng([s.seed, int(hashlib.sha256(r.encode()).hexdigest()[:8], 16)])
        rand = tuple(tuple(sorted((int(i // width), int(i % width))
                                  for i in rng.choice(n_layers * width, len(dkn), replace=False)))
                     for _ in range(s.n_random if dkn else 0))
        out[r] = RelationPlan(r, tuple(train), tuple(test), dkn, kn, rand)
    return out


def _digest(p: dict[str, RelationPlan]) -> str:
    return hashlib.sha256(json.dumps({r: dataclasses.asdict(v) for r, v in p.items()}, sort_keys=True)
                          .encode()).hexdigest()[:16]


def wrong_objects(res, plans: dict[str, RelationPlan], seed: int, facts=None) -> dict[str, str | None]:
    """{fact_id: a wrong object}: one of the fact's distractors in the run's language (given `facts`,
    the `FactSet` the run was made from), else another planned fact's object of the relation; seeded
    per fact; None when the relation offers none."""
    lang = res.settings.language
    given = {f.fact_id: f.distractors.get(lang, ()) for f in facts} if facts is not None else {}
    obj = {f: res.fact_queries(f)[0][1].strip() for p in plans.values() for f in p.train + p.test}
    out = {}
    for p in plans.values():
        for f in p.train + p.test:
            cands = [d for d in given.get(f, ()) if d.strip() != obj[f]]
            if not cands:
                cands = sorted({obj[g] for g in p.train + p.test if obj[g] != obj[f]})
            out[f] = random.Random(f"{seed}|wrong|{f}").choice(cands) if cands else None
    return out


def score_statements(lm, res, settings: FactCheck | None = None, *, facts=None, out: str | Path | None = None,
                     progress: bool = True):
    """The statements table (`COLUMNS`, a row per (fact, "true" | "false")) of every planned fact of
    `res` (a run with the "degenerate" phase); `facts`: the run's `FactSet`, for its distractors.
    Journaled per fact in `out` (default the run's directory); other settings are refused there."""
    from .attribution import scores
    from .probing import answer_stats

    s = settings or FactCheck()
    if not isinstance(s, FactCheck):
        raise checks.ArgumentError(f"settings must be a kn.statements.FactCheck, got {type(s).__name__}")
    plans = plan(res, s, n_layers=lm.n_layers, width=lm.width)
    wrong = wrong_objects(res, plans, s.seed, facts)
    rel = res.relation_of()
    where = {f: (p, "train" if f in p.train else "test") for p in plans.values() for f in p.train + p.test}

    def work(fid: str) -> list[dict]:
        p, part = where[fid]
        queries = res.fact_queries(fid)[: s.prompts]
        rows = []
        for kind, obj in (("true", None), ("false", wrong[fid])):
            if obj is None and kind == "false":
                continue
            total, probs, ranks = 0, [], []
            for prompt, a in queries:
                ans = a if obj is None else with_object(a, obj)
                total = total + scores(lm, prompt, ans, res.settings.attribution).float()
                pr, rk = answer_stats(lm, prompt, ans)
                probs.append(pr)
                ranks.append(rk)
            sc = (total / len(queries)).cpu().numpy()
            at = lambda ns: [float(sc[l, i]) for l, i in ns]  # noqa: E731
            rows.append({"kind": kind, "object": (obj or queries[0][1]).strip(), "split": part,
                         "p": float(np.mean(probs)), "rank": float(np.mean(ranks)), "dkn": at(p.dkn),
                         "kn_mean": float(np.mean(at(p.kn))) if p.kn else None,
                         "random": [float(np.mean(at(r))) for r in p.random]})
        return rows

    header = {"type": "settings", **dataclasses.asdict(s), "model": res.config["model"]["model"],
              "language": res.settings.language, "plan": _digest(plans), "with_facts": facts is not None}
    todo = [f for p in plans.values() for f in p.train + p.test]
    done = journaled(Path(out or res.out_dir) / JOURNAL, header, todo, rel, work, "fact-checking", progress)
    return table(done)


def table(records):
    """The statements table of `score_statements`' fact records."""
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


def load_statements(out_dir):
    """`score_statements`' table from its journal in `out_dir` (no model needed)."""
    return table(read_journal(Path(out_dir) / JOURNAL))
