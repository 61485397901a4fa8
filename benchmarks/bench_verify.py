#!/usr/bin/env python
"""The verify phase's measurements of one fact, per prompt vs batched, in one run (issue 31).

    python benchmarks/bench_verify.py                                      # gemma-3-270m, built-in facts
    python benchmarks/bench_verify.py --data pararel:../shared/data/pararel --relation P103

What `kn run`'s verify phase does for a fact: `kn.verification.effect` on the fact's prompts and on two
control facts' (another relation's, the same relation's), each P(gold) before, with the neurons x0 and
x2. "per prompt" is the code before batching (a forward pass per prompt and answer token, `answer_prob`
under `kn.scaled`); "batched, an effect per group" is `effect` on each of the three (one padded pass
per condition, `kn.probing.batch_probs`); "groups together" is what the verify phase does now
(`kn.verification.effects`: the three facts' prompts in one pass per condition).
The neurons are a fixed set of 4 (the cost does not depend on which). Prints the seconds of each
(median of --repeat, interleaved), the forward passes, their ratio and the largest relative
difference of the probabilities. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NEURONS = [(10, 100), (12, 1500), (15, 37), (17, 512)]


def per_prompt_effect(lm, prompts, answers, neurons, factor=2.0, suppress_factor=0.0):
    """`kn.verification.effect` before batching: `answer_prob` per prompt in each condition."""
    import numpy as np

    from kn.interventions import scaled
    from kn.probing import answer_prob

    def probs():
        return np.array([answer_prob(lm, p, a) for p, a in zip(prompts, answers)])

    before = probs()
    with scaled(lm, neurons, suppress_factor):
        sup = probs()
    with scaled(lm, neurons, factor):
        amp = probs()
    return before, sup, amp


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--data", default="builtin", help="builtin, or pararel:PATH")
    ap.add_argument("--relation", default=None, help="the fact's relation (default: the first with two usable facts)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--profile", action="store_true", help="also print cProfile's top functions of one batched verify")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    import kn
    import kn.data
    from kn.data.prepare import prepare_fact
    from kn.runs.phases.controls import Controls
    from kn.verification import effect, effects

    torch.set_num_threads(args.threads)
    lm = kn.load(args.model, device="cpu")
    facts = list(kn.data.load(args.data))
    usable = {}
    for f in facts:
        if f.has("en") and (args.relation is None or f.relation == args.relation):
            p = prepare_fact(f, lm, "en")
            if p is not None and p.usable:
                usable.setdefault(f.relation, []).append((f.fact_id, list(p.prompts), list(p.answers)))
        if any(len(v) >= 2 for v in usable.values()):
            break
    rel = next(r for r, v in usable.items() if len(v) >= 2)
    (fid, prompts, answers), (same_id, same_p, same_a) = usable[rel][:2]
    controls = Controls(lm, facts, "en", seed=0)
    other_id = controls.other(fid, rel)
    other_p, other_a = controls.prompts(other_id)
    queries = [(fid, prompts, answers), (other_id, other_p, other_a), (same_id, same_p, same_a)]
    n_prompts = sum(len(p) for _, p, _ in queries)
    n_tokens = sum(len(kn.tokens.targets(lm, p, a)) for _, ps, As in queries for p, a in zip(ps, As))

    passes = {"n": 0}
    handle = lm.model.register_forward_pre_hook(lambda *a, **k: passes.__setitem__("n", passes["n"] + 1),
                                                with_kwargs=True)
    def as_tuple(e):
        return e.before, e.suppressed, e.amplified

    # each path: the three groups (fact, other, same) -> [(before, suppressed, amplified)] per group
    paths = {"per prompt": lambda: [per_prompt_effect(lm, ps, As, NEURONS) for _, ps, As in queries],
             "batched, an effect per group": lambda: [as_tuple(effect(lm, ps, As, NEURONS)) for _, ps, As in queries],
             "batched, groups together (verify)": lambda: [
                 as_tuple(e) for e in effects(lm, [(ps, As) for _, ps, As in queries], NEURONS)]}
    secs = {k: [] for k in paths}
    n_passes, results = {}, {}
    with torch.inference_mode():
        for name, fn in paths.items():  # warm-up (and the pass counts)
            passes["n"] = 0
            results[name] = fn()
            n_passes[name] = passes["n"]
        for _ in range(args.repeat):
            for name, fn in paths.items():
                t0 = time.perf_counter()
                fn()
                secs[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()  # where the batched path's time goes: tokenization (targets) of every pair
        for _ in range(3):  # once per condition, as effect does
            for _, ps, As in queries:
                for p, a in zip(ps, As):
                    kn.tokens.targets(lm, p, a)
        tokenize = time.perf_counter() - t0
    handle.remove()
    diff = max(float(np.max(np.abs(np.asarray(b) - np.asarray(a)) / np.maximum(np.asarray(a), 1e-30)))
               for name in list(paths)[1:] for qa, qb in zip(results["per prompt"], results[name])
               for a, b in zip(qa, qb))
    med = {k: statistics.median(v) for k, v in secs.items()}
    print(f"\nverify of one fact: {lm.name}, fact {fid} ({rel}, {len(prompts)} prompts) with controls {other_id} "
          f"({len(other_p)}) and {same_id} ({len(same_p)}): {n_prompts} prompts, {n_tokens} answer tokens, "
          f"3 conditions; {args.threads} threads, load average {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| path | forward passes | s (median of %d) | s (fastest) | runs |" % args.repeat)
    print("|---|---:|---:|---:|---|")
    for k in paths:
        print(f"| {k} | {n_passes[k]} | {med[k]:.3f} | {min(secs[k]):.3f} | {', '.join(f'{s:.3f}' for s in secs[k])} |")
    print(f"\ntokenization (kn.tokens.targets of every pair, 3 conditions), inside each batched time: {tokenize:.3f} s; "
          "the rest is the forward passes and their softmax")
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        with torch.inference_mode():
            prof.enable()
            paths["batched, groups together (verify)"]()
            prof.disable()
        print("\ncProfile of one batched verify (top 20 by cumulative time):")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(20)
    for name in list(paths)[1:]:
        print(f"\nper prompt / {name}: {med['per prompt'] / med[name]:.2f}x (medians), "
              f"{min(secs['per prompt']) / min(secs[name]):.2f}x (fastest)")
    print(f"\nlargest relative difference of P(gold), batched vs per prompt: {diff:.2e}")


if __name__ == "__main__":
    main()
