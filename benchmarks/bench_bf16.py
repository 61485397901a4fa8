#!/usr/bin/env python
"""bfloat16 weights against float32 for attribution, on the packaged models, measured in one run.

    python benchmarks/bench_bf16.py                         # gemma-3-270m and smollm2-135m, 6 prompts
    python benchmarks/bench_bf16.py --models smollm2-135m --reps 3

Per prompt, IG (steps 20, the fast path) with float32 and with bfloat16 weights alternate, the order
flipped each repetition; the table gives the median seconds per prompt of each, the median of the
per-prompt ratios, the largest score error of bf16 relative to the largest float32 score, and the
Jaccard agreement of the coarse sets (threshold 0.2); then, for one prompt, where each dtype's time goes
(torch.profiler, self CPU time by op). It prints markdown tables; nothing is asserted.
On this machine bf16 is ~10x slower than float32 (benchmarks/results.md): expect a long run.
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gemma-3-270m,smollm2-135m")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=6)
    args = ap.parse_args(argv)

    import torch

    import kn
    import kn.cpu
    from bench_amig import CAUSAL
    from kn.localization import coarse

    torch.set_num_threads(2)
    kn.allocator.keep_freed_memory()  # faster repeated attributions (glibc), for both dtypes
    profiles = {}
    print(kn.cpu.describe() + "\n")
    print("| model | fp32 s/prompt | bf16 s/prompt | bf16 / fp32 (median, per prompt) | max score error (of the "
          "largest) | coarse-set Jaccard (median, min) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        lms = {"fp32": kn.load(name, device="cpu"), "bf16": kn.load(name, device="cpu", dtype=torch.bfloat16)}
        times = {k: [] for k in lms}
        ratios, errors, jac = [], [], []
        for p, a in CAUSAL[: args.prompts]:  # the first pair of attributions warms up, and is what is compared
            s32, s16 = kn.attribute(lms["fp32"], p, a), kn.attribute(lms["bf16"], p, a)
            errors.append(float((s16 - s32).abs().max() / s32.abs().max()))
            c32, c16 = coarse(s32), coarse(s16)
            jac.append(len(c32 & c16) / max(1, len(c32 | c16)))
            for r in range(args.reps):
                t = {}
                for k in (["fp32", "bf16"] if r % 2 == 0 else ["bf16", "fp32"]):
                    t0 = time.perf_counter()
                    kn.attribute(lms[k], p, a)
                    t[k] = time.perf_counter() - t0
                    times[k].append(t[k])
                ratios.append(t["bf16"] / t["fp32"])
        print(f"| {name} | {statistics.median(times['fp32']):.2f} | {statistics.median(times['bf16']):.2f} | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {max(errors):.3f} | "
              f"{statistics.median(jac):.2f} ({min(jac):.2f}) |")
        profiles[name] = {k: top_ops(lm, *CAUSAL[0]) for k, lm in lms.items()}
    print("\nWhere the time goes (one prompt, torch.profiler, share of self CPU time, largest ops):\n")
    print("| model | dtype | profiled s | largest ops |")
    print("|---|---|---:|---|")
    for name, by in profiles.items():
        for k, (total, ops) in by.items():
            print(f"| {name} | {k} | {total:.1f} | " + ", ".join(f"{o} {v:.0%}" for o, v in ops) + " |")


def top_ops(lm, prompt, answer, n=6):
    """(total self CPU seconds, [(op, share)] of the n largest) of one attribution under the profiler."""
    import kn
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        kn.attribute(lm, prompt, answer)
    ev = [(e.self_cpu_time_total / 1e6, e.key.replace("aten::", "")) for e in prof.key_averages()]
    total = sum(t for t, _ in ev)
    return total, [(k, t / total) for t, k in sorted(ev, reverse=True)[:n]]


if __name__ == "__main__":
    main()
