#!/usr/bin/env python
"""`kn run` throughput on real facts at the paper's setting and at a fast quadrature setting, measured
in one run, beside the Dai et al. code's 13.3 s per fact on a GPU.

    python benchmarks/bench_run.py                                   # gemma-3-270m, built-in facts
    python benchmarks/bench_run.py --data pararel:../shared/data/pararel --facts 9 --fast gauss_legendre:8
    python benchmarks/bench_run.py --facts 8 --calibrate 3 --screen 3           # and two-stage IG on 3 layers

The same facts (known to the model, seeded) are run from scratch at each setting, each into a fresh
directory, with the locate phase only (what the Dai code's figure covers: every paraphrase's
attribution and the refined set): steps 20 riemann_left (the paper's), `--fast RULE:STEPS`, and with
`--calibrate K` the setting `kn.calibrate` picks on K other known facts, and with `--screen K` that
setting (the calibrated one, else the fixed fast one) on the K layers gradient x activation picks per
prompt (`kn.IG(screen=K)`, two-stage locate). Prints facts per hour,
seconds per fact and per prompt, and the per-fact Jaccard agreement of each setting's knowledge
neurons with the paper setting's (over the facts with some in either; how many have some, beside it).
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


def measure(lm, facts, settings: dict, out: Path) -> tuple[list[dict], dict[str, float]]:
    """Run the facts at each {label: kn.IG(...)} (the first the paper's); returns (rows, the median
    per-fact Jaccard of each other setting's knowledge neurons with the first's)."""
    from kn.runs import run

    rows, kns = [], {}
    for i, (label, ig) in enumerate(settings.items()):
        t0 = time.perf_counter()
        res = run(lm, facts, out / str(i), progress=False, phases=("locate",), attribution=ig)
        secs = time.perf_counter() - t0
        neurons = res.tables["neurons"]
        kns[label] = {f: set(zip(g.layer, g["index"])) for f, g in neurons.groupby("fact_id")}
        n_facts = len(res.tables["facts"])
        n_prompts = int(res.tables["facts"]["n_prompts"].sum())
        rows.append({"setting": label, "facts": n_facts, "with_kns": len(kns[label]), "seconds": secs,
                     "per_fact": secs / n_facts, "per_prompt": secs / n_prompts, "per_hour": 3600 * n_facts / secs})
    first, *others = kns
    jac = {}
    for label in others:
        a, b = kns[first], kns[label]
        v = [len(a.get(f, set()) & b.get(f, set())) / max(1, len(a.get(f, set()) | b.get(f, set())))
             for f in set(a) | set(b)]
        jac[label] = statistics.median(v) if v else float("nan")
    return rows, jac


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
    ap.add_argument("--calibrate", type=int, default=0, metavar="K",
                    help="also run at the setting kn.calibrate picks on K other known facts (2 prompts each), "
                         "the calibration's seconds reported")
    ap.add_argument("--screen", type=int, default=None, metavar="K",
                    help="also run the calibrated (else the fast) setting on the K layers where gradient x "
                         "activation peaks (kn.IG(screen=K))")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)

    import torch

    import kn
    import kn.data
    from kn.data import select_facts
    from kn.data.pararel import CAUSAL_RELATIONS

    fast = parse_setting(args.fast)
    screen = kn.IG(screen=args.screen).screen  # a bad K fails before the model loads
    torch.set_num_threads(args.threads)
    kn.allocator.keep_freed_memory()  # faster repeated attributions (glibc), as kn run --keep-freed-memory
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
    want = args.facts + args.calibrate
    facts = select_facts(facts, relations=rels, per_relation=max(1, -(-want // len(rels))), language="en",
                         lm=lm, known=True, seed=0)
    facts, held = list(facts)[: args.facts], list(facts)[args.facts: want]
    settings = {"paper (riemann_left, 20)": kn.IG(),
                f"fixed fast ({fast[0]}, {fast[1]})": kn.IG(rule=fast[0], steps=fast[1])}
    cheap = fast
    calibration = None
    if args.calibrate:
        from kn.data.prepare import prepare_fact

        queries = []
        for f in held:
            prep = prepare_fact(f, lm, "en")
            queries += list(zip(prep.prompts, prep.answers))[:2]
        t0 = time.perf_counter()
        cal = kn.calibrate(lm, queries)
        calibration = (len(held), len(queries), time.perf_counter() - t0)
        settings[f"calibrated ({cal.rule}, {cal.steps})"] = kn.IG(rule=cal.rule, steps=cal.steps)
        cheap = (cal.rule, cal.steps)
    if screen:
        settings[f"{cheap[0]}:{cheap[1]} screen {screen}"] = kn.IG(rule=cheap[0], steps=cheap[1], screen=screen)
    with tempfile.TemporaryDirectory() as tmp:
        rows, jac = measure(lm, facts, settings, Path(tmp))
    print(f"\n`kn run` throughput: {lm.name}, {rows[0]['facts']} known facts of `{args.data}` (en), locate phase, "
          f"{args.threads} threads, {time.strftime('%Y-%m-%d')}\n")
    print("| setting | facts | s/fact | s/prompt | facts/hour | Dai code on a GPU, s/fact (theirs) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['facts']} | {r['per_fact']:.1f} | {r['per_prompt']:.2f} | {r['per_hour']:.0f} | {DAI_GPU} |")
    with_kns = {r["setting"]: r["with_kns"] for r in rows}
    for label, j in jac.items():
        print(f"\nKnowledge neurons per fact, {label} vs the paper setting: median Jaccard {j:.2f} over the facts "
              f"with some in either ({with_kns[label]} here, {with_kns[rows[0]['setting']]} there)")
    if calibration:
        n_facts, n_q, secs = calibration
        print(f"\nCalibration: `kn.calibrate` (no worse than the paper setting on each prompt) on {n_q} prompts of "
              f"{n_facts} other known facts, {secs:.0f} s, paid once per model.")


if __name__ == "__main__":
    main()
