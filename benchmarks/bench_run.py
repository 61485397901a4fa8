#!/usr/bin/env python
"""`kn run` throughput on real facts at the paper's setting and at a fast quadrature setting, measured
in one run, beside the Dai et al. code's 13.3 s per fact on a GPU.

    python benchmarks/bench_run.py                                   # gemma-3-270m, built-in facts
    python benchmarks/bench_run.py --data pararel:../shared/data/pararel --facts 9 --fast gauss_legendre:8

The same facts (known to the model, seeded) are run from scratch twice, each into a fresh directory,
with the locate phase only (what the Dai code's figure covers: every paraphrase's attribution and the
refined set): steps 20 riemann_left (the paper's), and `--fast RULE:STEPS`. Prints facts per hour,
seconds per fact and per prompt, and the per-fact Jaccard agreement of the two runs' knowledge neurons.
Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
DAI_GPU = 13.3  # s per PARAREL fact, the Dai et al. code on a GPU (as reported for their runs)


def measure(lm, facts, fast: tuple[str, int], out: Path) -> tuple[list[dict], float]:
    """Run the facts at the paper's setting and at `fast`; returns (rows, Jaccard median)."""
    import kn
    from kn.runs import run

    rows, kns = [], {}
    for label, (rule, steps) in (("paper (riemann_left, 20)", ("riemann_left", 20)), (f"fast ({fast[0]}, {fast[1]})", fast)):
        t0 = time.perf_counter()
        res = run(lm, facts, out / label.split()[0], progress=False, phases=("locate",),
                  attribution=kn.IG(steps=steps, rule=rule))
        secs = time.perf_counter() - t0
        neurons = res.tables["neurons"]
        kns[label] = {f: set(zip(g.layer, g["index"])) for f, g in neurons.groupby("fact_id")}
        n_facts = len(res.tables["facts"])
        n_prompts = int(res.tables["facts"]["n_prompts"].sum())
        rows.append({"setting": label, "facts": n_facts, "seconds": secs, "per_fact": secs / n_facts,
                     "per_prompt": secs / n_prompts, "per_hour": 3600 * n_facts / secs})
    a, b = kns.values()
    jac = [len(a.get(f, set()) & b.get(f, set())) / max(1, len(a.get(f, set()) | b.get(f, set())))
           for f in set(a) | set(b)]
    return rows, statistics.median(jac) if jac else float("nan")


def main(argv=None) -> None:
    from bench_fast import parse_setting, recommended

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--data", default="builtin", help="builtin, or pararel:PATH")
    ap.add_argument("--facts", type=int, default=8)
    ap.add_argument("--relations", default=None,
                    help="comma-separated relation ids (default: all of builtin; for PARAREL the object-last "
                         "relations of kn.data.pararel.CAUSAL_RELATIONS, since finding known facts probes the model)")
    ap.add_argument("--fast", default=recommended(), help="RULE:STEPS (default: the convergence study's recommendation)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)

    import torch

    import kn
    import kn.data
    from kn.data import select_facts
    from kn.data.pararel import CAUSAL_RELATIONS

    fast = parse_setting(args.fast)
    torch.set_num_threads(args.threads)
    facts = kn.data.load(args.data)
    present = list(dict.fromkeys(f.relation for f in facts))
    if args.relations:
        rels = args.relations.split(",")
    elif args.data.startswith("pararel:"):
        rels = list(CAUSAL_RELATIONS)
    else:
        rels = present
    if missing := [r for r in rels if r not in present]:
        raise SystemExit(f"--relations: {', '.join(missing)} not in {args.data} (it has {', '.join(present)})")
    lm = kn.load(args.model, device="cpu")
    facts = select_facts(facts, relations=rels, per_relation=max(1, -(-args.facts // len(rels))), language="en",
                         lm=lm, known=True, seed=0)
    facts = list(facts)[: args.facts]
    with tempfile.TemporaryDirectory() as tmp:
        rows, jac = measure(lm, facts, fast, Path(tmp))
    print(f"\n`kn run` throughput: {lm.name}, {rows[0]['facts']} known facts of `{args.data}` (en), locate phase, "
          f"{args.threads} threads, {time.strftime('%Y-%m-%d')}\n")
    print("| setting | facts | s/fact | s/prompt | facts/hour | Dai code on a GPU, s/fact (theirs) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['facts']} | {r['per_fact']:.1f} | {r['per_prompt']:.2f} | {r['per_hour']:.0f} | {DAI_GPU} |")
    print(f"\nKnowledge neurons per fact, fast vs paper setting: median Jaccard {jac:.2f}")


if __name__ == "__main__":
    main()
