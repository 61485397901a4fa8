#!/usr/bin/env python
"""How many IG steps do you need? Each quadrature rule at a few step counts against an exact
integral, on real models and real facts, with the neuron sets each one finds.

    python benchmarks/convergence.py --out runs/convergence                  # gemma-3-270m and smollm2-135m
    python benchmarks/convergence.py --out runs/convergence --models smollm2-135m --facts 10 --prompts 2
    python benchmarks/convergence.py --out runs/convergence --pararel ../shared/data/pararel
    python benchmarks/convergence.py --out runs/convergence --record book/results/convergence

Per prompt (the first `--prompts` of each of `--facts` known facts: the built-in set, and PARAREL given
its path): the exact integral is Gauss-Legendre with `--exact` nodes, cross-checked against the
trapezoid rule with 4x as many points on the first prompt of the first `--cross-facts` facts (the
largest disagreement is printed: the exact integral is only as exact as that). Then every rule of kn.RULES
at each of `--steps`: its error (max |score - exact| / max |exact|), the Jaccard agreement of its
coarse set (threshold 0.2) with the exact one's and with the paper's (riemann_left, 20 steps); per
fact, the same for the refined sets (share 0.7, min_prompts 2). Journaled one record per (model,
fact) in `--out` (rerun to resume); writes errors.csv and sets.csv there and prints the medians.

The recommended fast setting (`recommend`): the cheapest (rule, steps), fewest steps first, whose
median error is at most the paper setting's and whose refined sets agree with the exact integral's at
least as well as the paper's (mean Jaccard), on every model. `--record DEST` keeps errors, sets, the
recommendation and the exact integral's cross-checks as a recording (kn.recording) with provenance;
book/steps.md reads it and benchmarks/bench_fast.py takes its recommendation as the default.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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
    import kn
    from kn.localization import coarse, refine

    def scores(rule, m, p, a):
        return kn.attribute(lm, p, a, kn.IG(rule=rule, steps=m)).double()

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

    from kn.calibration import search

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


def main() -> None:
    from kn.data.pararel import CAUSAL_RELATIONS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="gemma-3-270m,smollm2-135m")
    ap.add_argument("--facts", type=int, default=30)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--steps", default="2,4,8,16,32,64")
    ap.add_argument("--exact", type=int, default=128, help="Gauss-Legendre nodes of the exact integral")
    ap.add_argument("--pararel", default=None, help="a PARAREL directory: half the facts come from it")
    ap.add_argument("--pararel-relations", default=",".join(CAUSAL_RELATIONS),
                    help="PARAREL relations to draw from (default: the object-last ones of the PARAREL chapter)")
    ap.add_argument("--cross-facts", type=int, default=3, help="facts whose first prompt cross-checks the exact integral")
    ap.add_argument("--record", default=None, help="record the tables and the recommendation here (kn.recording)")
    args = ap.parse_args()
    import time


    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    import kn
    import kn.data
    from kn.data import select_facts

    torch.set_num_threads(os.cpu_count() or 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "journal.jsonl"
    done = {(r["model"], r["fact_id"]): r for r in map(json.loads, journal.read_text().splitlines())} \
        if journal.exists() else {}
    steps = [int(s) for s in args.steps.split(",")]
    rules = list(kn.RULES)
    chosen_by_model = {}
    for model in args.models.split(","):
        lm = kn.load(model, device="cpu")
        pools = [("builtin", kn.data.load("builtin", languages=["en"]))]
        if args.pararel:
            pools.append(("pararel", kn.data.load(f"pararel:{args.pararel}", relations=args.pararel_relations.split(","))))
        per_pool = args.facts // len(pools)
        chosen = []
        for name, facts in pools:
            rels = list(dict.fromkeys(f.relation for f in facts))
            picked = select_facts(facts, relations=rels, per_relation=max(1, -(-per_pool // len(rels))),
                                  language="en", lm=lm, known=True, seed=0)
            chosen += [(name, f) for f in round_robin(picked)[:per_pool]]
        chosen_by_model[model] = chosen
        from kn.data.prepare import prepare_fact

        for i, (name, f) in enumerate(tqdm(chosen, desc=model, unit="fact")):
            if (model, f.fact_id) in done:
                continue
            prep = prepare_fact(f, lm, "en")
            queries = list(zip(prep.prompts, prep.answers))[: args.prompts]
            t0 = time.perf_counter()
            rec = {"model": model, "data": name, **fact_record(lm, f.fact_id, queries, rules, steps, args.exact,
                                                               check=i < args.cross_facts),
                   "seconds": time.perf_counter() - t0}
            with open(journal, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            done[(model, f.fact_id)] = rec
    recs = [done[(model, f.fact_id)] for model in args.models.split(",") for _, f in chosen_by_model[model]]
    errors = pd.DataFrame([{"model": r["model"], "data": r["data"], "fact_id": r["fact_id"], **e}
                           for r in recs for e in r["errors"]])
    sets = pd.DataFrame([{"model": r["model"], "data": r["data"], "fact_id": r["fact_id"], **s}
                         for r in recs for s in r["sets"]])
    errors.to_csv(out / "errors.csv", index=False)
    sets.to_csv(out / "sets.csv", index=False)
    cross = [r["cross_check"] for r in recs if r["cross_check"] is not None]
    print(f"exact integral: Gauss-Legendre {args.exact}; its largest disagreement with the trapezoid rule at "
          f"{4 * args.exact} points: {max(cross):.2e} of the largest score ({len(cross)} prompts)")
    print(errors.groupby(["model", "rule", "steps"])[["error", "coarse_vs_exact", "coarse_vs_paper"]].median()
          .unstack("model").round(4).to_markdown())
    print(sets.groupby(["model", "rule", "steps"])[["refined_vs_exact", "refined_vs_paper"]].mean()
          .unstack("model").round(3).to_markdown())
    rec = recommend(errors, sets)
    print("recommended:", rec.to_dict("records")[0])
    moved = transfer(errors, sets)
    print("calibrated on 3 facts, scored on the rest (means over splits):")
    print(moved.groupby("model")[["steps", "held_error", "paper_held_error", "held_agreement", "paper_held_agreement",
                                   "prompts_no_worse", "no_worse"]].mean().round(4).to_markdown())
    if args.record:
        from kn import recording

        checks = pd.DataFrame([{"model": r["model"], "fact_id": r["fact_id"], "exact_nodes": args.exact,
                                "trapezoid_points": 4 * args.exact, "disagreement": r["cross_check"]}
                               for r in recs if r["cross_check"] is not None])
        cmd = "python benchmarks/convergence.py " + " ".join(sys.argv[1:])
        prov = recording.provenance(cmd, seconds=sum(r.get("seconds", 0.0) for r in recs),
                                    settings={k: v for k, v in vars(args).items() if k != "record"})
        recording.record(args.record, {"errors": errors, "sets": sets, "recommended": rec,
                                       "transfer": moved, "exact_checks": checks}, prov)
        print(f"recorded in {args.record}")


if __name__ == "__main__":
    main()
