#!/usr/bin/env python
"""What AMIG costs over plain (zero-baseline) IG, per prompt, measured in the same run.

    python benchmarks/bench_amig.py                       # gemma-3-270m, smollm2-135m, BERT-base
    python benchmarks/bench_amig.py --models gemma-3-270m --reps 3

The packaged models are the real ones (kn.load); BERT-base (bert-base-cased config, random init,
the benchmark's offline tokenizer: benchmarks/bench_attribution.py) stands in for m-BERT, whose
weights cannot be had offline. For each prompt, IG with the zero baseline and with baseline="amig"
(steps 20, the fast path) alternate, the order flipped each repetition; the table gives the median
seconds per prompt and the median of the per-prompt ratios, and the baseline's own cost (the
corrupted copies' pass). It prints a markdown table; nothing is asserted.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

STEPS = 20
CAUSAL = [("The capital of France is", " Paris"), ("The official language of Brazil is", " Portuguese"),
          ("Albert Einstein was born in", " Germany"), ("The Eiffel Tower is located in the city of", " Paris"),
          ("法国的首都是", "巴黎"), ("La capitale de l'Italie est", " Rome")]


def load(name: str):
    import kn

    if name == "bert":
        import bench_attribution as B

        model, tok = B.build_model("bert")
        return kn.wrap(model, tok, name="BERT-base (random init)"), [(p, a) for p, a in B.prompts("bert")]
    return kn.load(name), CAUSAL


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench(name: str, reps: int) -> dict:
    import kn
    from kn.tokens import targets

    lm, queries = load(name)
    zero, amig, base, ratios = [], [], [], []
    for r in range(reps):
        for i, (p, a) in enumerate(queries):
            runs = {"zero": lambda: kn.attribute(lm, p, a, steps=STEPS),
                    "amig": lambda: kn.attribute(lm, p, a, steps=STEPS, baseline="amig")}
            order = ["zero", "amig"] if (r + i) % 2 == 0 else ["amig", "zero"]
            t = {k: timed(runs[k]) for k in order}
            zero.append(t["zero"])
            amig.append(t["amig"])
            ratios.append(t["amig"] / t["zero"])
            base.append(sum(timed(lambda: kn.BASELINES["amig"](lm, tg)) for tg in targets(lm, p, a)))
    return {"model": lm.name, "prompts": len(queries), "reps": reps, "zero": statistics.median(zero),
            "amig": statistics.median(amig), "ratio": statistics.median(ratios), "ratio_max": max(ratios),
            "baseline": statistics.median(base)}


def main(argv=None) -> None:
    import torch

    import kn

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="gemma-3-270m,smollm2-135m,bert")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    kn.allocator.keep_freed_memory()  # faster repeated attributions (glibc), on both sides of the ratio
    rows = [bench(m.strip(), args.reps) for m in args.models.split(",") if m.strip()]
    print(f"\nAMIG vs zero-baseline IG, steps {STEPS}, fast path, {args.threads} threads, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| model | prompts x reps | IG s/prompt | AMIG s/prompt | AMIG / IG (median) | worst prompt | baseline s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['prompts']} x {r['reps']} | {r['zero']:.2f} | {r['amig']:.2f} | "
              f"{r['ratio']:.3f} | {r['ratio_max']:.3f} | {r['baseline']:.3f} |")


if __name__ == "__main__":
    main()
