#!/usr/bin/env python
"""Peak memory of one kn.attribute call on a long prompt (issue 12, finding 4).

    python benchmarks/memory_long_prompt.py --model gemma-3-270m --tokens 2800 --layers 0,1 --steps 2
    python benchmarks/memory_long_prompt.py --model gemma-3-270m --tokens 2800            # the default call

Each measurement runs in a fresh process: peak RSS (ru_maxrss) of the process minus its RSS after the
model is loaded and the prompt tokenized, printed as one JSON line with the batch kn chose.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(args) -> dict:
    import torch

    import kn
    from kn.ig import plan as P

    torch.set_num_threads(args.threads)
    lm = kn.load(args.model, device="cpu")
    words = ("the history of the city and its people in the long winter of the year " * 400).split()
    prompt = " ".join(words)
    ids = lm.tokenizer(prompt)["input_ids"][: args.tokens]
    prompt = lm.tokenizer.decode(ids, skip_special_tokens=True) + " The capital of France is"
    n = len(lm.tokenizer(prompt)["input_ids"])
    chosen = {}
    real = P.auto_batch

    def spy(*a, **k):
        chosen["batch"] = real(*a, **k)
        return chosen["batch"]

    P.auto_batch = spy
    import kn.ig.fast as F
    F.auto_batch = spy
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    base = rss_mb()
    t = time.perf_counter()
    kn.attribute(lm, prompt, "Paris", steps=args.steps, layers=layers,
                 batch_size=args.batch_size or None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": args.model, "tokens": n, "layers": args.layers or "all", "steps": args.steps,
            "batch": args.batch_size or chosen.get("batch"), "attribution_peak_mb": round(peak - base),
            "process_peak_mb": round(peak), "seconds": round(time.perf_counter() - t, 1)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--tokens", type=int, default=2800)
    p.add_argument("--layers", default="")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", action="store_true")
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args)), flush=True)
        return 0
    r = subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:]], capture_output=True, text=True)
    if r.returncode:
        print(r.stderr[-3000:], file=sys.stderr)
        return r.returncode
    print(r.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
