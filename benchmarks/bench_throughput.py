#!/usr/bin/env python
"""`kn run` throughput over PARAREL with the known filter, locate and verify with controls (issue 31),
at the paper's setting and at a fast one (the model's fast default, `kn.fast_setting`), measured in one run and each in a process of its own (so each
has its own peak memory); then where the time goes and the FLOP count of a fact against this machine's
measured matmul rate, which bounds the facts per hour any code could reach here.

    python benchmarks/bench_throughput.py --data pararel:../shared/data/pararel --facts 6
    python benchmarks/bench_throughput.py --fast gauss_legendre:6 --screen 3 --facts 8  # another fast setting

Per setting: the known filter on the sampled facts (probing until `--facts` known ones are found; its
seconds count, as `kn run --known` pays them), then `kn.run(..., phases=("locate", "verify"))` on the
known ones. Rate = known facts x 3600 / (filter + run seconds). Peak memory: the child's maximum resident
set (`ru_maxrss`), the model included. Profile: the fast setting's filter and run over `--facts` known facts,
its wall time sampled by what kn is doing (`sampling.py`: walks, screen, IG passes, verify, tokenization...;
`torch.profiler`'s per-operator overhead had inflated the time outside operators to 58%). FLOPs: over the same fact at both settings (torch.profiler's
count plus the output layer's in-place products it misses, `bench_fast.uncounted_flops`); the ceiling is
the measured rate of the model's own product shapes. `--bf16` adds the fast setting with bfloat16 weights,
once with IG's float32 head (exact logits) and once with its bfloat16 head (`kn.IG(head_dtype="bfloat16")`),
each with its KN sets against float32's, the bfloat16 product rate, and the bfloat16 head's profile.
Nothing is asserted.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
DAI_GPU = 13.3  # s per PARAREL fact, the Dai et al. code on a GPU (as reported for their runs)
GOAL = 2700  # facts per hour (issue 31: 10x the Dai code on a GPU)
BF16, BF16_HEAD = ", bfloat16", ", bfloat16 weights and head"  # the --bf16 rows' labels: after the fast one's


def known_facts(lm, data: str, relations: list[str], n: int):
    """(the first `n` known facts over `relations`, the filter's seconds, how many it probed)."""
    import kn.data
    from kn.data import select_facts

    facts = kn.data.load(data)
    t0 = time.perf_counter()
    chosen = select_facts(facts, relations=relations, per_relation=max(1, -(-n // len(relations))), language="en",
                          lm=lm, known=True, seed=0)
    secs = time.perf_counter() - t0
    probed = chosen.info["selection"]["counts"]["en"].get("probed", 0)
    return list(chosen)[:n], secs, probed


def child(args) -> dict:
    """One setting, measured: what the parent prints."""
    import torch

    import kn
    from kn.runs import run

    torch.set_num_threads(args.threads)
    kn.allocator.keep_freed_memory()
    lm = kn.load(args.model, device="cpu", dtype=getattr(torch, args.dtype))
    ig = kn.settings.from_dict(json.loads(args.child))
    import kn.data.select as select

    counting, pool_secs = select.language_counts, []

    def timed_counts(*a, **k):  # the pool's counts: paid once per run, whatever its size
        t0 = time.perf_counter()
        try:
            return counting(*a, **k)
        finally:
            pool_secs.append(time.perf_counter() - t0)

    select.language_counts = timed_counts
    facts, filter_secs, probed = known_facts(lm, args.data, args.relations, args.facts)
    select.language_counts = counting
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = run(lm, facts, Path(tmp) / "run", progress=False, phases=("locate", "verify"), attribution=ig)
        secs = time.perf_counter() - t0
    t, n = res.tables["facts"], res.tables["neurons"]
    sets = {f: sorted([int(l), int(i)] for l, i in zip(g.layer, g["index"])) for f, g in n.groupby("fact_id")}
    return {"facts": len(t), "prompts": int(t.n_prompts.sum()), "with_kns": int(t.n_neurons.notna().sum()), "sets": sets,
            "filter_seconds": filter_secs, "pool_seconds": sum(pool_secs), "probed": probed, "run_seconds": secs,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def ceiling_rate(lm, threads: int, dtype: str = "float32") -> float:
    """GFLOP/s of the model's products as IG runs them, in `dtype`: a batch of path rows through one FFN's up
    projection and through the output layer (`bench_fast.matmul_rate`), the better of the two."""
    from bench_fast import matmul_rate

    d, v = lm.model.config.hidden_size, lm.model.get_output_embeddings().weight.shape[0]
    return max(matmul_rate(64, d, lm.width, threads, seconds=0.3, repeats=3, dtype=dtype),
               matmul_rate(16, d, min(v, 8192), threads, seconds=0.3, repeats=3, dtype=dtype))


def profile(args, settings: dict) -> dict:
    """The FLOPs of one fact at each setting (`torch.profiler`); then where the fast setting's time goes
    over the known filter and `--facts` known facts, sampled (`sampling.Sampler`)."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    import kn
    from bench_fast import uncounted_flops
    from kn.runs import run
    from sampling import Sampler

    torch.set_num_threads(args.threads)
    kn.allocator.keep_freed_memory()
    lm = kn.load(args.model, device="cpu")
    facts, _, _ = known_facts(lm, args.data, args.relations, 1)
    out = {"rate_gflops": ceiling_rate(lm, args.threads), "flops": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, ig) in enumerate(settings.items()):
            with torch_profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as prof:
                res = run(lm, facts, Path(tmp) / str(i), progress=False, phases=("locate", "verify"), attribution=ig)
            flops = (sum(e.flops or 0 for e in prof.key_averages())
                     + uncounted_flops(prof.key_averages(group_by_input_shape=True)))
            out["flops"][label] = flops / int(res.tables["facts"].n_prompts.sum())
        with Sampler() as sampled:
            facts, _, _ = known_facts(lm, args.data, args.relations, args.facts)
            run(lm, facts, Path(tmp) / "sampled", progress=False, phases=("locate", "verify"),
                attribution=list(settings.values())[-1])
    out["profile"], out["profile_wall"], out["profile_facts"] = sampled.shares(), sampled.seconds, len(facts)
    if args.bf16:  # the same facts with bfloat16 weights and head: its own product rate and where its time goes
        lm = kn.load(args.model, device="cpu", dtype=torch.bfloat16)
        out["rate_gflops_bf16"] = ceiling_rate(lm, args.threads, "bfloat16")
        with tempfile.TemporaryDirectory() as tmp, Sampler() as sampled:
            facts, _, _ = known_facts(lm, args.data, args.relations, args.facts)
            run(lm, facts, Path(tmp) / "sampled", progress=False, phases=("locate", "verify"),
                attribution=dataclasses.replace(list(settings.values())[-1], head_dtype="bfloat16"))
        out["profile_bf16"], out["profile_wall_bf16"] = sampled.shares(), sampled.seconds
    return out


def jaccard(a, b) -> float:
    """|A & B| / |A | B| of two neuron lists ([layer, index] pairs); 1 when both are empty."""
    a, b = {tuple(x) for x in a}, {tuple(x) for x in b}
    return len(a & b) / len(a | b) if a | b else 1.0


def main(argv=None) -> None:
    from bench_fast import parse_setting

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--data", default="pararel:../shared/data/pararel", help="pararel:PATH, or builtin")
    ap.add_argument("--relations", default="P30,P36,P1376,P407,P364,P27,P108,P279,P463",
                    help="comma-separated relations (default: the at-scale chapter's nine)")
    ap.add_argument("--facts", type=int, default=6, help="known facts per setting")
    ap.add_argument("--fast", default=None, help="RULE:STEPS of the fast setting (default: the model's fast "
                    "default, kn.fast_setting, the agreement study's pick)")
    ap.add_argument("--screen", type=int, default=None, help="the fast setting's screened layers (0: all layers; "
                    "default: the fast default's)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--bf16", action="store_true", help="also the fast setting with bfloat16 weights (CPUs with "
                    "AVX512-BF16; scores stay float32), with the float32 head and with the bfloat16 one "
                    "(kn.IG's head_dtype), their KN sets compared with the float32 run's")
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.relations = args.relations.split(",")

    import kn

    if args.fast is None:
        default = kn.fast_setting(args.model)
        args.fast = f"{default.rule}:{default.steps}"
        args.screen = (default.screen or 0) if args.screen is None else args.screen
    args.screen = args.screen or 0
    fast_rule, fast_steps = parse_setting(args.fast)
    settings = {"paper (riemann_left, 20)": kn.IG(),
                f"fast ({fast_rule}, {fast_steps}" + (f", screen {args.screen})" if args.screen else ")"):
                    kn.IG(rule=fast_rule, steps=fast_steps, screen=args.screen or None)}
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.profile_child:
        print(json.dumps(profile(args, settings)))
        return

    def spawn(*extra) -> dict:
        cmd = [sys.executable, __file__, "--model", args.model, "--data", args.data, "--relations",
               ",".join(args.relations), "--facts", str(args.facts), "--fast", args.fast, "--screen", str(args.screen),
               "--threads", str(args.threads), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    rows = {label: spawn("--child", json.dumps(ig.to_dict())) for label, ig in settings.items()}
    fast_label = list(settings)[1]
    if args.bf16:
        rows[fast_label + BF16] = spawn("--child", json.dumps(settings[fast_label].to_dict()), "--dtype", "bfloat16")
        bf16_head = dataclasses.replace(settings[fast_label], head_dtype="bfloat16")
        rows[fast_label + BF16_HEAD] = spawn("--child", json.dumps(bf16_head.to_dict()), "--dtype", "bfloat16")
    prof = spawn("--profile-child", *(["--bf16"] if args.bf16 else []))
    print(f"\n`kn run` throughput: {args.model}, known facts of `{args.data}` ({len(args.relations)} relations, en), "
          f"known filter + locate + verify with controls, {args.threads} threads, {time.strftime('%Y-%m-%d')}\n")
    print("| setting | known facts (probed) | filter s (pool counts) | run s | s/fact | facts/hour | at scale | "
          "with KNs | peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rates, at_scale = {}, {}
    for label, r in rows.items():
        secs = r["filter_seconds"] + r["run_seconds"]
        rates[label] = 3600 * r["facts"] / secs
        at_scale[label] = 3600 * r["facts"] / (secs - r["pool_seconds"])
        print(f"| {label} | {r['facts']} ({r['probed']}) | {r['filter_seconds']:.0f} ({r['pool_seconds']:.1f}) | "
              f"{r['run_seconds']:.0f} | {secs / r['facts']:.1f} | {rates[label]:.0f} | {at_scale[label]:.0f} | "
              f"{r['with_kns']} | {r['peak_mb']:.0f} |")
    print("\nat scale: without the pool counts (`kn.data.select.language_counts`: every fact of the relations "
          "tokenized once per run, whatever the number of facts located)")
    paper, fast = rates[list(settings)[0]], rates[fast_label]
    print(f"\nfast / paper: x{fast / paper:.2f}; goal {GOAL} facts/hour (the Dai code on a GPU: {3600 / DAI_GPU:.0f}); "
          f"fast reaches {fast / GOAL:.0%} of it, {at_scale[fast_label] / GOAL:.0%} at scale")
    for suffix in [BF16, BF16_HEAD] if args.bf16 else []:
        label = fast_label + suffix
        a, b = rows[fast_label]["sets"], rows[label]["sets"]
        jac = sorted(jaccard(a.get(f, []), b.get(f, [])) for f in sorted(set(a) | set(b)))
        print(f"{suffix[2:]} / float32 (fast): x{rates[label] / fast:.2f}, {rates[label]:.0f} facts/hour "
              f"({rates[label] / GOAL:.0%} of the goal; {at_scale[label]:.0f} at scale, {at_scale[label] / GOAL:.0%}); "
              f"KN sets against float32's, Jaccard per fact: median {jac[len(jac) // 2]:.2f}, min {jac[0]:.2f} over "
              f"{len(jac)} facts")
    per_prompt = rows[next(iter(rows))]["prompts"] / rows[next(iter(rows))]["facts"]
    print(f"\nFLOPs per prompt (one fact, locate + verify) and the ceiling at {prof['rate_gflops']:.0f} GFLOP/s "
          f"(this machine's rate on the model's product shapes), {per_prompt:.1f} prompts per fact:\n")
    print("| setting | GFLOP per prompt | ceiling facts/hour | measured / ceiling |")
    print("|---|---:|---:|---:|")
    flops = dict(prof["flops"])
    for suffix in [BF16, BF16_HEAD] if args.bf16 else []:  # the same products, counted at float32, at the bfloat16 rate
        flops[fast_label + suffix] = flops[fast_label]
    for label, f in flops.items():
        rate = prof["rate_gflops_bf16"] if "bfloat16" in label else prof["rate_gflops"]
        ceiling = 3600 * rate * 1e9 / (f * per_prompt)
        print(f"| {label} | {f / 1e9:.1f} | {ceiling:.0f} | {rates[label] / ceiling:.0%} |")
    if args.bf16:
        print(f"\nbfloat16 products: {prof['rate_gflops_bf16']:.0f} GFLOP/s on the same shapes "
              f"(x{prof['rate_gflops_bf16'] / prof['rate_gflops']:.2f} float32's)")
    for suffix, label in [("", fast_label)] + ([("_bf16", fast_label + BF16_HEAD)] if args.bf16 else []):
        print(f"\nWhere the time of {label} goes (known filter + run over {prof['profile_facts']} known facts, "
              f"{prof['profile_wall' + suffix]:.1f} s wall, sampled every 5 ms; `sampling.CATEGORIES`):\n")
        print("| what | seconds | share |")
        print("|---|---:|---:|")
        for what, share in prof["profile" + suffix].items():
            print(f"| {what} | {share * prof['profile_wall' + suffix]:.2f} | {share:.0%} |")


if __name__ == "__main__":
    main()
