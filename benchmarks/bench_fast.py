#!/usr/bin/env python
"""Speed where it counts (issue 16): kn at a fast quadrature setting against the EleutherAI package,
each side's error against the exact integral beside its time; how close the exact path gets to the
machine's matmul rate; and the cost of a whole fact (every paraphrase, then the refined set).

    python benchmarks/bench_fast.py                          # BERT-base and GPT-2 small, real size
    python benchmarks/bench_fast.py --fast gauss_legendre:8 --reps 3 --models bert
    python benchmarks/bench_fast.py --check-only --tiny      # CI: tiny models, the checks, no timing

Models, tokenizers, checkpoints, worker processes and the package's environment are those of
benchmarks/bench_attribution.py (random init of real size, fixed seeds, the same weights on both
sides). Per model:

- timed, alternating, each side in its own worker process: the package (`get_scores`, 20 steps,
  its linspace path, batch 20), kn at the paper's setting (riemann_left, 20 steps: today's exact
  fast path), kn at the fixed fast setting (`--fast RULE:STEPS`, for use without calibration) and kn
  calibrated per model (the recommendation: `kn.calibrate(..., against=("linspace", 20))` on 4 prompts
  that are not scored, the calibration's seconds reported);
- each side's error against the exact integral (Gauss-Legendre with `--exact` nodes, computed by kn
  in the driver; its own accuracy is bounded by a cross-check against the trapezoid rule with 4x as
  many points on the first prompt): max|scores - exact| / max|exact| over the [layers, width] matrix.
  The package's error is measured on its own scores where it attributes kn's site (BERT); on GPT-2
  it attributes the pre-GELU tensor, another integrand, so its error there is its rule's (linspace,
  20 points) at kn's site, computed by kn, and labelled so;
- achieved GFLOP/s of the paper-setting path: FLOPs counted by torch.profiler (with_flops) over one
  attribution per prompt, divided by its seconds, each timing paired with timings of fp32 matmul
  rates right beside it (the FFN's shape at the path's batch, and a 2048 x 2048 square), with
  the profiler's split of CPU time (matrix products vs everything else: where the rest goes);
- a whole fact: the package's `get_refined_neurons` vs `kn.locate` (paper and fast setting) on one
  fact's 5 paraphrases, the same thresholds (0.3 of each prompt's maximum, shared by more than half
  of the prompts), seconds per fact and the agreement (Jaccard) of the refined sets.

It prints markdown and, unless `--out ''`, writes it to benchmarks/results-fast.md. Targets (issue 16):
>= 5x the package on BERT-base and >= 20x on GPT-2 small at no worse error than the package's own;
>= 70% of the matmul rate. Nothing here is asserted by a unit test except the tiny checks.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
import shutil
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO))

import bench_attribution as B  # noqa: E402

RESULTS = BENCH_DIR / "results-fast.md"
PAPER = ("riemann_left", 20)
PEER_STEPS = 20
THRESHOLD, SHARE = 0.3, 0.5  # the package's defaults for get_refined_neurons
MATMUL = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
          "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math")


def recommended(path: Path = REPO / "book" / "results" / "convergence" / "recommended.csv") -> str:
    """The convergence study's recommended setting (kn convergence --record), if recorded."""
    import csv

    if path.is_file():
        row = next(csv.DictReader(path.open()))
        return f"{row['rule']}:{int(float(row['steps']))}"
    return "gauss_legendre:8"


def parse_setting(text: str) -> tuple[str, int]:
    import kn

    rule, _, steps = text.partition(":")
    if rule not in kn.RULES or not steps.isdigit() or int(steps) < 1:
        raise SystemExit(f"--fast {text!r}: expected RULE:STEPS with RULE one of {', '.join(kn.RULES)} "
                         f"and STEPS a positive integer, e.g. gauss_legendre:8")
    return rule, int(steps)


class InProcess:
    """kn in the driver, one model: the exact integral, the package rule at kn's site, FLOP counts."""

    def __init__(self, ckpt: Path, threads: int):
        import torch

        torch.set_num_threads(threads)
        B.quiet_transformers()
        self.family, self.model, self.tok = B.load_checkpoint(ckpt)
        self.lm = B.kn_lm(self.model, self.tok, f"bench-{self.family}")
        cfg = self.model.config
        self.hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
        self.width = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * self.hidden

    def scores(self, prompt, answer, rule, steps):
        import kn

        return kn.attribute(self.lm, prompt, answer, steps=steps, rule=rule).double()

    def flops(self, prompt, answer, rule, steps) -> tuple[float, dict[str, float], int]:
        """(FLOPs of one attribution, self CPU seconds by op, the FFN matmuls' rows) from torch.profiler.

        The rows are the FLOP-weighted median row count of the matrix products with the FFN's shape
        ([rows, hidden] x [hidden, width] either way round), as the profiler saw them: a masked LM's
        pass runs path points x prompt tokens; a causal LM's runs the answer token alone over the
        prompt's cache, with the rows of every layer below present at each block."""
        import kn
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as prof:
            kn.attribute(self.lm, prompt, answer, steps=steps, rule=rule)
        events = prof.key_averages()
        total = float(sum(e.flops or 0 for e in events)) + uncounted_flops(prof.key_averages(group_by_input_shape=True))
        by_op = {e.key: e.self_cpu_time_total / 1e6 for e in events}
        hidden, width = self.hidden, self.width
        seen = []  # (rows, flops)
        for e in prof.key_averages(group_by_input_shape=True):
            if e.key not in ("aten::addmm", "aten::mm") or not e.input_shapes:
                continue
            a, b = (e.input_shapes[1], e.input_shapes[2]) if e.key == "aten::addmm" else e.input_shapes[:2]
            if len(a) == 2 and len(b) == 2 and {a[1], b[1]} == {hidden, width} and a[1] == b[0]:
                seen.append((a[0], float(e.flops or 0)))
        seen.sort()
        half, acc, rows = sum(f for _, f in seen) / 2, 0.0, 0
        for r, f in seen:
            acc += f
            rows = r
            if acc >= half:
                break
        return total, by_op, rows


def uncounted_flops(events) -> float:
    """FLOPs of the in-place `aten::addmm_` calls (the output layer's vocabulary-chunk accumulation in
    kn.ig.head), which torch.profiler's with_flops counts as 0: 2 * M * K * N each, from the recorded
    shapes (self [M, N], mat1 [M, K], mat2 [K, N]); events grouped by input shape."""
    total = 0.0
    for e in events:
        if e.key == "aten::addmm_" and e.input_shapes and len(e.input_shapes) >= 3:
            (m, k), (_, n) = e.input_shapes[1], e.input_shapes[2]
            total += 2.0 * m * k * n * e.count
    return total


def matmul_rate(rows: int, inner: int, width: int, threads: int, seconds: float = 0.5, repeats: int = 5,
                dtype: str = "float32") -> float:
    """GFLOP/s of a [rows, inner] @ [inner, width] product in `dtype` at `threads` threads: the best of
    `repeats` timings of `seconds` each (a peak; one timing can land on a slow moment of a shared machine)."""
    import torch

    torch.set_num_threads(threads)
    a, w = torch.randn(rows, inner, dtype=getattr(torch, dtype)), torch.randn(inner, width, dtype=getattr(torch, dtype))
    for _ in range(3):
        a @ w
    best = 0.0
    for _ in range(repeats):
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            a @ w
            n += 1
        best = max(best, 2 * rows * inner * width * n / (time.perf_counter() - t) / 1e9)
    return best


def run_family(family: str, args, tmp: Path, log) -> dict:
    ckpt = tmp / family
    name = B.TINY_LABEL[family] if args.tiny else B.LABEL[family]
    log(f"\n== {name}: building the random model (seed {B.SEED}) ...")
    B.save_checkpoint(family, args.tiny, ckpt)
    ps = B.prompts(family, args.prompts)
    fact_prompts, fact_answer = B.paraphrases(family)
    use_peer = args.peer_ok and family in B.PEER_TYPE
    local = InProcess(ckpt, args.threads)
    exact = [local.scores(p, a, "gauss_legendre", args.exact) for p, a in ps]
    cross = B.rel_err(local.scores(*ps[0], "riemann_trapezoid", 4 * args.exact), exact[0])
    package_rule = [B.rel_err(local.scores(p, a, "linspace", PEER_STEPS), e) for (p, a), e in zip(ps, exact)]
    import kn

    # calibrated on prompts that are not scored: the whole-fact paraphrases other than the first (a FACTS prompt)
    held = [(q, fact_answer) for q in fact_prompts[1:]]
    t0 = time.perf_counter()
    cal = kn.calibrate(local.lm, held, against=("linspace", PEER_STEPS), exact=args.exact)
    cal_s = time.perf_counter() - t0
    matched = (cal.rule, cal.steps)
    log(f"   kn.calibrate against the package's rule (linspace {PEER_STEPS}) at kn's site on {len(held)} other "
        f"prompts: {matched[0]} {matched[1]} in {cal_s:.1f} s")
    sides = {"paper": PAPER, "fast": args.fast, "matched": matched}
    workers: dict[str, B.Worker] = {}
    times = {n: [[] for _ in ps] for n in ["peer", *sides]}
    fact_s = {n: [] for n in ["peer", *sides]}
    sets: dict[str, list] = {}
    outs = {n: [tmp / f"{family}-{n}-{i}.pt" for i in range(len(ps))] for n in ["peer", *sides]}
    try:
        if use_peer:
            workers["peer"] = B.Worker(f"{family}-peer", B.peer_python(), ckpt, args.threads, tmp, side="peer")
        for n, (rule, _) in sides.items():
            workers[n] = B.Worker(f"{family}-kn-{n}", sys.executable, ckpt, args.threads, tmp, side="kn", rule=rule)
        steps = {"peer": PEER_STEPS, **{n: m for n, (_, m) in sides.items()}}
        reps = 1 if args.check_only else args.reps
        if not args.check_only:
            for n, w in workers.items():  # one untimed call each: lazy initialisation is not attribution
                w.ask(op="score", prompt=ps[0][0], answer=ps[0][1], steps=steps[n], batch_size=B.BATCH)
        for rep in range(reps):
            order = list(workers)
            if rep % 2:
                order.reverse()
            for i, (prompt, answer) in enumerate(ps):
                for n in order:
                    if not args.check_only:
                        time.sleep(0.2)
                    r = workers[n].ask(op="score", prompt=prompt, answer=answer, steps=steps[n],
                                       batch_size=B.BATCH, out=str(outs[n][i]) if rep == 0 else "")
                    times[n][i].append(r["seconds"])
                    args.max_load = max(args.max_load, os.getloadavg()[0])
            if not args.check_only:
                log(f"   rep {rep + 1}/{reps}: " + ", ".join(
                    f"{n} {statistics.median(t[-1] for t in times[n]):.3f} s/prompt" for n in order))
        for rep in range(1 if args.check_only else args.fact_reps):
            for n in (list(workers) if rep % 2 == 0 else list(workers)[::-1]):
                r = workers[n].ask(op="locate", prompts=fact_prompts, answer=fact_answer, steps=steps[n],
                                   threshold=THRESHOLD, share=SHARE)
                fact_s[n].append(r["seconds"])
                sets[n] = {tuple(x) for x in r["neurons"]}
            if not args.check_only:
                log(f"   whole fact, rep {rep + 1}: " + ", ".join(f"{n} {fact_s[n][-1]:.2f} s" for n in workers))
        peaks = {n: w.close() for n, w in workers.items()}
        workers.clear()
    finally:
        for w in workers.values():
            w.kill()

    import torch

    err = {}
    for n in ["peer", *sides]:
        if n == "peer" and not use_peer:
            continue
        if n == "peer" and family != "bert":  # another integrand: the package's rule at kn's site
            err[n] = package_rule
            continue
        err[n] = [B.rel_err(torch.load(f).double(), e) for f, e in zip(outs[n], exact)]
    if use_peer and family == "bert":
        lin = [local.scores(p, a, "linspace", PEER_STEPS) for p, a in ps]
        err["peer_vs_kn_linspace"] = [B.rel_err(torch.load(f).double(), b) for f, b in zip(outs["peer"], lin)]
    row = {"family": family, "name": name, "n_prompts": len(ps), "cross": cross, "err": err,
           "sets": sets, "peaks": peaks, "matched": matched, "calibration": (len(held), cal_s)}

    def med(t):
        return statistics.median(statistics.median(x) for x in t) if all(t) else None

    row["s"] = {n: med(t) for n, t in times.items() if n in err}
    row["fact_s"] = {n: statistics.median(v) for n, v in fact_s.items() if v}
    if not args.check_only:
        flops, by_op, ffn_rows = [], {}, []
        for p, a in ps:
            f, ops, r = local.flops(p, a, *PAPER)
            flops.append(f)
            ffn_rows.append(r)
            for k, v in ops.items():
                by_op[k] = by_op.get(k, 0.0) + v
        total = sum(by_op.values())
        mm = sum(v for k, v in by_op.items() if k in MATMUL)
        rest = sorted(((v, k) for k, v in by_op.items() if k not in MATMUL), reverse=True)[:5]
        rows = int(statistics.median(ffn_rows)) or 1
        row["flops"] = {"matmul_share": mm / total, "rest": [(k, v / total) for v, k in rest], "rows": rows,
                        "shape": f"[{rows}, {local.hidden}] @ [{local.hidden}, {local.width}]",
                        **paired_rates(local, ps, flops, rows, args.threads, args.reps)}
    return row


def paired_rates(local: InProcess, ps, flops: list[float], rows: int, threads: int, rounds: int) -> dict:
    """The paper-setting path's achieved GFLOP/s and the matmul rates, measured in pairs: each timed
    attribution (in the driver, the call the profiler counted) right beside a timing of the FFN-shape
    and the square product, so that both sides of each ratio see the machine in the same state (a
    shared machine's rate drifts by tens of percent over a run). Medians over rounds x prompts."""
    achieved, ffn, square, ratio = [], [], [], []
    local.scores(*ps[0], *PAPER)
    for _ in range(rounds):
        for (p, a), f in zip(ps, flops):
            t = time.perf_counter()
            local.scores(p, a, *PAPER)
            achieved.append(f / (time.perf_counter() - t) / 1e9)
            ffn.append(matmul_rate(rows, local.hidden, local.width, threads, repeats=3))
            square.append(matmul_rate(2048, 2048, 2048, threads, repeats=1))
            ratio.append(achieved[-1] / ffn[-1])
    med = statistics.median
    return {"gflops": med(achieved), "peak_ffn": med(ffn), "peak_square": med(square), "share": med(ratio),
            "share_range": (min(ratio), max(ratio))}


def jaccard(a: set, b: set) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def report(rows: list[dict], args) -> tuple[str, bool]:
    from kn.calibration import STEPS as CALIBRATION_STEPS

    fr, fm = args.fast
    ok = True
    L = [f"Fixed fast setting (without calibration): `{fr}`, {fm} steps. Paper setting: riemann_left, 20 steps (kn's exact fast path). "
         f"Package: `get_scores`, {PEER_STEPS} steps, batch {B.BATCH}. Exact integral: Gauss-Legendre "
         f"{args.exact}. {args.threads} torch threads; {rows[0]['n_prompts']} prompts x "
         f"{1 if args.check_only else args.reps} "
         f"repetitions, alternating; median seconds per prompt. Error = max|scores - exact| / max|exact| "
         f"over the [layers, width] matrix (median and worst prompt).", "",
         "| model | package s | error | kn paper s | error | kn fast s | error | package / kn fast | "
         "paper / fast |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def e(r, n):
        v = r["err"].get(n)
        return "—" if not v else f"{statistics.median(v):.1e} ({max(v):.1e})"

    def s(r, n, key="s"):
        v = r[key].get(n)
        return "—" if v is None else f"{v:.3f}"

    def x(a, b):
        return "—" if a is None or b is None else f"{a / b:.1f}x"

    for r in rows:
        t = r["s"]
        L.append(f"| {r['name']} | {s(r, 'peer')} | {e(r, 'peer')}{'*' if r['family'] != 'bert' and 'peer' in t else ''}"
                 f" | {s(r, 'paper')} | {e(r, 'paper')} | {s(r, 'fast')} | {e(r, 'fast')} | "
                 f"{x(t.get('peer'), t.get('fast'))} | {x(t.get('paper'), t.get('fast'))} |")
    L += ["", "\\* the package attributes GPT-2's pre-GELU tensor (another integrand); its error is that of "
          "its rule (linspace, 20 points) at kn's site, computed by kn.", ""]
    L += ["Kn calibrated per model, the recommendation: `kn.calibrate(lm, prompts, against=(\"linspace\", "
          f"{PEER_STEPS}))` on {rows[0]['calibration'][0]} prompts that are not among the scored ones (the "
          "whole fact's paraphrases but its first) picks the fewest points (every rule at "
          f"{', '.join(map(str, CALIBRATION_STEPS))}) no less accurate than the package's rule at kn's site "
          "on each of them; then it is scored on the prompts above. Calibration is paid once per model.", "",
          "| model | calibrated setting | calibration s | kn s | error | package error | package / kn |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        mr, mm = r["matched"]
        L.append(f"| {r['name']} | {mr} {mm} | {r['calibration'][1]:.1f} | {s(r, 'matched')} | {e(r, 'matched')} | "
                 f"{e(r, 'peer')} | {x(r['s'].get('peer'), r['s'].get('matched'))} |")
    L.append("")
    L += [f"- exact integral's own accuracy ({r['name']}): Gauss-Legendre {args.exact} vs trapezoid "
          f"{4 * args.exact} points, first prompt: {r['cross']:.1e}" for r in rows]
    for r in rows:
        if "peer_vs_kn_linspace" in r["err"]:
            v = max(r["err"]["peer_vs_kn_linspace"])
            good = v <= B.REL_TOL_PEER
            ok &= good
            L.append(f"- {r['name']}: the package's scores vs kn's linspace 20 (the same computation): {v:.1e} "
                     f"{'PASS' if good else 'FAIL'} (<= {B.REL_TOL_PEER:g})")
        fast_err = max(r["err"]["fast"])
        good = fast_err < 1e-2
        ok &= good
        L.append(f"- {r['name']}: kn fast setting within 1e-2 of the exact integral: {fast_err:.1e} "
                 f"{'PASS' if good else 'FAIL'}")
    L += ["", f"A whole fact: {len(B.PARAPHRASES[0])} paraphrases of one fact, refined neurons (threshold "
          f"{THRESHOLD} of each prompt's maximum, in more than {SHARE:.0%} of the prompts); median seconds "
          f"per fact over {1 if args.check_only else args.fact_reps} repetitions.", "",
          "| model | package get_refined_neurons s | kn locate, paper s | kn locate, fast s | package / kn fast | "
          "sets: package vs kn paper | kn fast vs kn paper |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        f, st = r["fact_s"], r["sets"]
        jp = f"{jaccard(st['peer'], st['paper']):.2f}" if "peer" in st else "—"
        L.append(f"| {r['name']} | {s(r, 'peer', 'fact_s')} | {s(r, 'paper', 'fact_s')} | {s(r, 'fast', 'fact_s')} | "
                 f"{x(f.get('peer'), f.get('fast'))} | {jp} | {jaccard(st['fast'], st['paper']):.2f} |")
    if not args.check_only:
        L += ["", "How close to the machine: the paper-setting path's achieved rate (FLOPs counted by "
              "torch.profiler over one attribution per prompt / its seconds, timed in the driver) against fp32 "
              "matmul rates timed right beside each attribution (medians over rounds x prompts; the ratio is "
              "the median of the paired ratios); the profiler's share of CPU time in matrix products, and "
              "the largest other ops.", "",
              "| model | achieved GFLOP/s | matmul, FFN shape | matmul, 2048 square | achieved / FFN-shape "
              "(range) | CPU time in matrix products | largest other ops (share of CPU time) |",
              "|---|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            f = r["flops"]
            lo, hi = f["share_range"]
            L.append(f"| {r['name']} | {f['gflops']:.0f} | {f['peak_ffn']:.0f} ({f['shape']}) | {f['peak_square']:.0f} | "
                     f"{f['share']:.0%} ({lo:.0%}-{hi:.0%}) | {f['matmul_share']:.0%} | "
                     + ", ".join(f"{k.replace('aten::', '')} {v:.0%}" for k, v in f["rest"]) + " |")
        L += ["", "Targets (ratios measured in this run):", ""]
        by = {r["family"]: r for r in rows}
        for fam, want in (("bert", 5), ("gpt2", 20)):
            r = by.get(fam)
            if not r or r["s"].get("peer") is None:
                continue
            for side, what in (("matched", f"kn calibrated per model ({' '.join(map(str, r['matched']))})"),
                               ("fast", f"kn at the fixed setting, without calibration ({fr} {fm})")):
                ratio = r["s"]["peer"] / r["s"][side]
                no_worse = max(r["err"][side]) <= max(r["err"]["peer"])
                L.append(f"- {what} >= {want}x the package on {r['name']} at no worse error: "
                         f"{'MET' if ratio >= want and no_worse else 'NOT MET'} ({ratio:.1f}x; worst error "
                         f"{max(r['err'][side]):.1e} vs the package's {max(r['err']['peer']):.1e})")
        for r in rows:
            share = r["flops"]["share"]
            L.append(f"- paper-setting path >= 70% of the FFN-shape matmul rate on {r['name']}: "
                     f"{'MET' if share >= 0.7 else 'NOT MET'} ({share:.0%})")
        if args.max_load > (os.cpu_count() or 1) + 0.5:
            L += ["", f"**Warning: the machine was busy (1-minute load average up to {args.max_load:.1f}); "
                      f"wall times are inflated.**"]
    return "\n".join(L), ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", default=recommended(), help="the fast setting, RULE:STEPS (default: the convergence "
                   "study's recommendation, book/results/convergence/recommended.csv; without one gauss_legendre:8)")
    p.add_argument("--models", default="bert,gpt2", help="comma-separated subset of bert,gpt2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--fact-reps", type=int, default=2)
    p.add_argument("--prompts", type=int, default=len(B.FACTS))
    p.add_argument("--exact", type=int, default=128, help="Gauss-Legendre nodes of the exact integral")
    p.add_argument("--check-only", action="store_true", help="the checks only, no timing")
    p.add_argument("--tiny", action="store_true", help="tiny models (CI)")
    p.add_argument("--no-peer", action="store_true", help="leave the package out")
    p.add_argument("--out", default=str(RESULTS), help="where the tables go ('' for nowhere)")
    args = p.parse_args(argv)
    args.fast = parse_setting(args.fast)
    families = [f.strip() for f in args.models.split(",") if f.strip()]
    for f in families:
        if f not in B.PEER_TYPE:
            raise SystemExit(f"unknown model {f!r}: choose from {','.join(B.PEER_TYPE)} (the package's families)")
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    args.peer_ok = False
    if args.no_peer:
        log("SKIP the package: --no-peer")
    elif args.check_only and not B.peer_ready():
        log(f"SKIP the package: its environment {B.PEER_VENV.relative_to(REPO)} is missing; create it with "
            "`python benchmarks/bench_attribution.py --setup-peer` (about a minute)")
    else:
        B.setup_peer(log=log)
        args.peer_ok = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.max_load = os.getloadavg()[0]
    machine = "" if args.check_only else B.describe_machine(args.threads)
    if machine:
        log(f"machine: {machine}")
        B.keep_freed_memory()  # the driver times attributions too (the GFLOP/s part); workers ask for it themselves
    tmp = Path(tempfile.mkdtemp(prefix="kn-bench-fast-"))
    try:
        rows = [run_family(f, args, tmp, log) for f in families]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text, ok = report(rows, args)
    print("\n" + text, flush=True)
    if args.out and not args.check_only and not args.tiny:
        cmd = " ".join(["python benchmarks/bench_fast.py"] + list(argv if argv is not None else sys.argv[1:]))
        Path(args.out).write_text(f"# Fast setting vs the package, GFLOP/s, a whole fact\n\nCommand: `{cmd}`. "
                                  f"Commit {B._commit(REPO)}, measured {time.strftime('%Y-%m-%d')} on {machine}."
                                  f"\n\n{text}\n")
        log(f"written to {args.out}")
    if not ok:
        log("CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
