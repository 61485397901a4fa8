"""How many IG steps do you need? Each quadrature rule at a few step counts against an exact integral,
on real models and real facts, with the neuron sets each one finds (`kn convergence`; the chapter "How
many steps do you need?" reads its recording).

Per prompt (the first `prompts` of each of `facts` known facts: the built-in set, and PARAREL given its
path): the exact integral is Gauss-Legendre with `exact` nodes, cross-checked against the trapezoid
rule with 4x as many points on the first prompt of the first `cross_facts` facts (the exact integral
is only as exact as that). Then every rule of kn.RULES at each of `steps`: its error (max |score -
exact| / max |exact|), the Jaccard agreement of its coarse set (threshold 0.2) with the exact one's and
with the paper's (riemann_left, 20 steps); per fact, the same for the refined sets (share 0.7,
min_prompts 2). Journaled one record per (model, fact) in the study's directory, with the settings
it was made with (run it again to resume; a record of other settings is made again, never reused).

The recommended fast setting (`recommend`): the cheapest (rule, steps), fewest steps first, whose
median error is at most the paper setting's and whose refined sets agree with the exact integral's at
least as well as the paper's (mean Jaccard), on every model; `transfer`: does a setting calibrated on
a few facts hold on the others.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Sequence

PAPER = ("riemann_left", 20)


def jaccard(a: set, b: set) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def round_robin(facts) -> list:
    """The facts one relation at a time in turn (a larger selection extends a smaller one)."""
    by_rel: dict = {}
    for f in facts:
        by_rel.setdefault(f.relation, []).append(f)
    return [f for group in itertools.zip_longest(*by_rel.values()) for f in group if f is not None]


def fact_record(lm, fid: str, queries, rules, steps, exact_nodes: int, check: bool) -> dict:
    from .attribution import attribute
    from .localization import coarse, refine
    from .settings import IG

    def scores(rule, m, p, a):
        return attribute(lm, p, a, IG(rule=rule, steps=m)).double()

    rows, sets = [], {}
    cross = None
    for j, (p, a) in enumerate(queries):
        exact = scores("gauss_legendre", exact_nodes, p, a)
        scale = float(exact.abs().max()) or 1.0
        if check and j == 0:
            other = scores("riemann_trapezoid", 4 * exact_nodes, p, a)
            cross = float((other - exact).abs().max()) / scale
        sets.setdefault(("exact", 0), []).append(coarse(exact.float()))
        for rule in rules:
            for m in steps + ([PAPER[1]] if rule == PAPER[0] and PAPER[1] not in steps else []):
                if rule == "riemann_trapezoid" and m < 2:
                    continue
                s = scores(rule, m, p, a)
                c = coarse(s.float())
                sets.setdefault((rule, m), []).append(c)
                rows.append({"prompt": j, "rule": rule, "steps": m,
                             "error": float((s - exact).abs().max()) / scale})
    paper = sets[PAPER]
    for r in rows:
        c = sets[(r["rule"], r["steps"])][r["prompt"]]
        r["coarse_vs_exact"] = jaccard(c, sets[("exact", 0)][r["prompt"]])
        r["coarse_vs_paper"] = jaccard(c, paper[r["prompt"]])
    refined = {k: set(refine(v, 0.7, min_prompts=min(2, len(v)))) for k, v in sets.items()}
    per_set = [{"rule": r, "steps": m, "refined": len(refined[(r, m)]),
                "refined_vs_exact": jaccard(refined[(r, m)], refined[("exact", 0)]),
                "refined_vs_paper": jaccard(refined[(r, m)], refined[PAPER])} for r, m in refined if r != "exact"]
    return {"fact_id": fid, "prompts": len(queries), "cross_check": cross, "errors": rows, "sets": per_set}


def recommend(errors, sets):
    """One-row DataFrame: the recommended (rule, steps) and its numbers beside the paper setting's."""
    import pandas as pd

    err = errors.groupby(["rule", "steps", "model"])["error"].median().unstack("model")
    agree = sets.groupby(["rule", "steps", "model"])["refined_vs_exact"].mean().unstack("model")
    paper_err, paper_agree = err.loc[PAPER], agree.loc[PAPER]
    ok = (err <= paper_err).all(axis=1) & (agree >= paper_agree).all(axis=1)
    cands = err[ok].assign(worst=err[ok].max(axis=1)).reset_index().sort_values(["steps", "worst"])
    rule, steps = (cands.iloc[0]["rule"], int(cands.iloc[0]["steps"])) if len(cands) else PAPER
    row = {"rule": rule, "steps": steps, "paper_rule": PAPER[0], "paper_steps": PAPER[1]}
    for m in err.columns:
        row |= {f"error {m}": err.loc[(rule, steps), m], f"paper error {m}": paper_err[m],
                f"agreement {m}": agree.loc[(rule, steps), m], f"paper agreement {m}": paper_agree[m]}
    return pd.DataFrame([row])


def transfer(errors, sets, k: int = 3, splits: int = 50, seed: int = 0):
    """Does a setting calibrated on a few facts hold on the others? Per model and seeded split: k
    calibration facts (all their prompts), the rest held out. On the calibration prompts,
    `kn.calibration.search` picks what `kn.calibrate` would from the study's grid (the fewest points no
    worse than the paper setting on every calibration prompt); on the held-out facts, its median error
    and refined-set agreement (Jaccard with the exact integral's, mean over facts) beside the paper
    setting's, and the share of held-out prompts on which it is no worse. One row per split."""
    import numpy as np
    import pandas as pd

    from .calibration import search

    rows = []
    for model, err in errors.groupby("model"):
        agree = sets[sets.model == model].set_index(["fact_id", "rule", "steps"])["refined_vs_exact"]
        table = err.pivot_table(index=["fact_id", "prompt"], columns=["rule", "steps"], values="error")
        facts = sorted(err.fact_id.unique())
        rng = np.random.default_rng(seed)
        for split in range(splits):
            cal = set(rng.choice(facts, size=min(k, len(facts) - 1), replace=False))
            in_cal = table.index.get_level_values("fact_id").isin(cal)
            c, held = table[in_cal], table[~in_cal]
            chosen, _ = search(lambda r, m: tuple(c[(r, m)]), [(r, int(m)) for r, m in table.columns],
                               tuple(c[PAPER]))
            setting = chosen[:2] if chosen else PAPER
            held_facts = sorted(set(held.index.get_level_values("fact_id")))

            def agreement(rule, m):
                return float(agree.loc[[(f, rule, m) for f in held_facts]].mean())

            rows.append({"model": model, "split": split, "calibration_facts": len(cal), "rule": setting[0],
                         "steps": setting[1], "held_error": float(held[setting].median()),
                         "paper_held_error": float(held[PAPER].median()),
                         "held_agreement": agreement(*setting), "paper_held_agreement": agreement(*PAPER),
                         "prompts_no_worse": float((held[setting] <= held[PAPER]).mean())})
    out = pd.DataFrame(rows)
    out["no_worse"] = (out.held_error <= out.paper_held_error) & (out.held_agreement >= out.paper_held_agreement)
    return out


def transfer_summary(moved):
    """Per model, the `transfer` table's splits: how many, the mean points chosen, the median held-out
    error and mean refined-set agreement beside the paper setting's, the mean share of held-out prompts
    no worse, and the share of splits no worse on both."""
    return moved.groupby("model").agg(
        splits=("split", "size"), points=("steps", "mean"), held_error=("held_error", "median"),
        paper_held_error=("paper_held_error", "median"), held_agreement=("held_agreement", "mean"),
        paper_held_agreement=("paper_held_agreement", "mean"), prompts_no_worse=("prompts_no_worse", "mean"),
        no_worse=("no_worse", "mean"))


def transfer_choices(moved):
    """Per model and setting chosen in the `transfer` table ("rule steps"): the number of splits that
    chose it, fewest points first."""
    counts = moved.assign(setting=moved.rule + " " + moved.steps.astype(str)).groupby(["model", "setting", "steps"]).size()
    return counts.rename("splits").reset_index().sort_values(["model", "steps"])


OWN_FILES = ("journal.jsonl", "errors.csv", "sets.csv")


def check_out(out: Path) -> None:
    """The study's directory: new, empty, or one it wrote (only its own files): nothing of a user's is
    overwritten."""
    if out.exists():
        others = sorted(p.name for p in out.iterdir() if p.name not in OWN_FILES)
        if others:
            raise ValueError(f"{out} holds files the convergence study did not write ({', '.join(others[:5])}); "
                             f"give it a new or empty directory (--out)")


def study(models: Sequence[str], out, *, facts: int = 30, prompts: int = 3, steps: Sequence[int] = (2, 4, 8, 16, 32, 64),
          exact: int = 128, pararel: str | None = None, pararel_relations: Sequence[str] | None = None,
          cross_facts: int = 3, progress: bool = True) -> dict:
    """Run (or resume) the study in `out` and return its tables {errors, sets, recommended, transfer,
    exact_checks} (pandas DataFrames) and its `seconds` (the sum over its facts' records)."""
    import pandas as pd
    from tqdm.auto import tqdm

    from . import checks
    from .data import load as load_data
    from .data import select_facts
    from .data.pararel import CAUSAL_RELATIONS
    from .data.prepare import prepare_fact
    from .models import load
    from .quadrature import RULES

    models = checks.texts(models, "models")
    facts, prompts = checks.integer(facts, "facts", low=1), checks.integer(prompts, "prompts", low=1)
    exact, cross_facts = checks.integer(exact, "exact", low=2), checks.integer(cross_facts, "cross_facts", low=0)
    steps = [checks.integer(s, "steps", low=1) for s in steps]
    out = Path(out)
    check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "journal.jsonl"
    rules = list(RULES)

    def key(model: str, fact_id: str, depends) -> tuple:
        return model, fact_id, json.dumps(depends, sort_keys=True)

    def depends_on(check: bool) -> dict:  # what a fact's record is computed from, beside its model and fact
        return {"rules": rules, "steps": steps, "exact": exact, "prompts": prompts, "cross_check": check}

    # a record made with other settings (or before records named theirs) is not reused: it is made again
    done = {key(r["model"], r["fact_id"], r.get("settings")): r
            for r in map(json.loads, journal.read_text().splitlines())} if journal.exists() else {}
    chosen_by_model = {}
    for model in models:
        lm = load(model, device="cpu")
        pools = [("builtin", load_data("builtin", languages=["en"]))]
        if pararel:
            pools.append(("pararel", load_data(f"pararel:{pararel}", relations=list(pararel_relations or CAUSAL_RELATIONS))))
        per_pool = facts // len(pools)
        chosen = []
        for name, pool in pools:
            rels = list(dict.fromkeys(f.relation for f in pool))
            picked = select_facts(pool, relations=rels, per_relation=max(1, -(-per_pool // len(rels))),
                                  language="en", lm=lm, known=True, seed=0)
            chosen += [(name, f) for f in round_robin(picked)[:per_pool]]
        chosen_by_model[model] = chosen
        for i, (name, f) in enumerate(tqdm(chosen, desc=model, unit="fact", disable=not progress)):
            depends = depends_on(i < cross_facts)
            if key(model, f.fact_id, depends) in done:
                continue
            prep = prepare_fact(f, lm, "en")
            queries = list(zip(prep.prompts, prep.answers))[:prompts]
            t0 = time.perf_counter()
            rec = {"model": model, "data": name, **fact_record(lm, f.fact_id, queries, rules, steps, exact,
                                                               check=i < cross_facts),
                   "seconds": time.perf_counter() - t0, "settings": depends}
            with open(journal, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            done[key(model, f.fact_id, depends)] = rec
    recs = [done[key(model, f.fact_id, depends_on(i < cross_facts))]
            for model in models for i, (_, f) in enumerate(chosen_by_model[model])]
    errors = pd.DataFrame([{"model": r["model"], "data": r["data"], "fact_id": r["fact_id"], **e}
                           for r in recs for e in r["errors"]])
    sets = pd.DataFrame([{"model": r["model"], "data": r["data"], "fact_id": r["fact_id"], **s}
                         for r in recs for s in r["sets"]])
    errors.to_csv(out / "errors.csv", index=False)
    sets.to_csv(out / "sets.csv", index=False)
    checked = pd.DataFrame([{"model": r["model"], "fact_id": r["fact_id"], "exact_nodes": exact,
                             "trapezoid_points": 4 * exact, "disagreement": r["cross_check"]}
                            for r in recs if r["cross_check"] is not None])
    return {"errors": errors, "sets": sets, "recommended": recommend(errors, sets), "transfer": transfer(errors, sets),
            "exact_checks": checked, "seconds": sum(r.get("seconds", 0.0) for r in recs)}
