#!/usr/bin/env python
"""Run throughput with the local engine and with Ray workers, measured in one run, and what a full
PARAREL and BMLAMA-17 run would cost from it.

    python benchmarks/bench_ray.py                        # gemma-3-270m, 8 built-in facts, 1 and 2 workers
    python benchmarks/bench_ray.py --facts 12 --workers 1,2,4

The same facts (built-in set, English, seeded, known to the model) are run three ways from scratch,
each into a fresh directory: the local engine (this process, all cores as torch threads), and Ray on a
local cluster with each worker count, the cores split among the workers. Wall-clock includes the
workers' model loads (reported apart). The default phases (locate, verify) and steps 20. It prints
markdown tables; nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Full-size datasets (algorithms.md; the issue): facts x prompts each.
PARAREL = (27_738, 9)
BMLAMA17 = (6_792 * 17, 1)  # facts x languages, one prompt per fact and language
DAI_GPU = 13.3  # s per fact, the Dai et al. code on a GPU (BERT-base; as reported for their runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--facts", type=int, default=8)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--relations", default="capital,official_language,currency,continent")
    args = ap.parse_args()

    import torch

    import kn
    import kn.data
    from kn.data import select_facts
    from kn.runs import Ray, run

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    kn.allocator.keep_freed_memory()  # faster repeated attributions (glibc); the Ray workers follow this process
    lm = kn.load(args.model, device="cpu")
    rels = args.relations.split(",")
    facts = select_facts(kn.data.load("builtin", relations=rels, languages=["en"]), relations=rels,
                         per_relation=max(1, args.facts // len(rels)), language="en", lm=lm, known=True, seed=0)
    print(f"{lm.name}: {len(facts)} built-in facts; {cores} cores", file=sys.stderr)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = run(lm, facts, Path(tmp) / "local", progress=False)
        rows.append(("local", 1, cores, time.perf_counter() - t0, 0.0, res))
        for w in map(int, args.workers.split(",")):
            import ray

            threads = max(1, cores // w)
            ray.init(num_cpus=w * threads, include_dashboard=False, _node_ip_address="127.0.0.1")
            t_load = _load_time(ray, args.model, threads)
            t0 = time.perf_counter()
            res = run(lm, facts, Path(tmp) / f"ray{w}", engine=Ray(workers=w, num_cpus=threads), progress=False)
            rows.append((f"ray, {w} worker{'s' * (w > 1)}", w, threads, time.perf_counter() - t0, t_load, res))
            ray.shutdown()

    print(f"\n{lm.name}, {len(facts)} facts (built-in set, en), default phases (locate, verify), steps 20, "
          f"{cores}-core CPU:\n")
    print("| engine | workers | threads each | wall s | one worker's model load s (measured apart) | facts/hour (wall) | "
          "facts/hour (after load) | s per prompt |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    prompts = len(rows[0][5].prompts)
    best = None
    for name, w, th, wall, load, res in rows:
        work = wall - load
        per_prompt = work / max(prompts, 1)
        best = per_prompt if best is None or per_prompt < best else best
        print(f"| {name} | {w} | {th} | {wall:.0f} | {load:.0f} | {3600 * len(facts) / wall:.0f} | "
              f"{3600 * len(facts) / work:.0f} | {per_prompt:.2f} |")
    print(f"\nPrompts run: {prompts}. Estimates below scale the best measured seconds per prompt "
          f"({best:.2f} s, this machine) by each dataset's prompts; N workers of this machine's speed "
          "each (linear scaling assumed: workers share nothing but the driver's journal). GPU: assumed "
          f"{DAI_GPU} s per PARAREL fact per GPU worker (the Dai et al. code's figure), not measured here.\n")
    print("| dataset | facts x prompts | CPU-hours (this machine) | 8 CPU workers, days | 64 CPU workers, days | "
          "8 GPU workers, days |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (n, p) in (("PARAREL (full)", PARAREL), ("BMLAMA-17 (17 languages)", BMLAMA17)):
        hours = n * p * best / 3600
        gpu = n * (p / PARAREL[1]) * DAI_GPU / 3600 / 24 / 8
        print(f"| {name} | {n:,} x {p} | {hours:,.0f} | {hours / 8 / 24:.1f} | {hours / 64 / 24:.1f} | {gpu:.2f} |")


def _load_time(ray, model: str, threads: int) -> float:
    """Seconds for one worker process to load the model (the cost each worker pays once)."""

    @ray.remote(num_cpus=threads)
    def load():
        import time as t

        import kn

        s = t.perf_counter()
        kn.load(model, device="cpu")
        return t.perf_counter() - s

    return ray.get(load.remote())


if __name__ == "__main__":
    main()
