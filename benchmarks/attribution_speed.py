"""The attribution benchmark's speed comparison (benchmarks/bench_attribution.py): per model, the
sides' workers started, the same weights and tokens checked, then timed calls alternating between the
package and kn (the reference path too, fewer times), each side's peak RSS read as its worker stops;
`--ab`: kn's fast path of two checkouts, alternating. With the tables and targets they give.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from attribution_checks import agreement
from attribution_models import BATCH, LABEL, PEER_TYPE, SEED, TINY_LABEL, prompts, rel_err, save_checkpoint
from attribution_sides import ENTRY, REPO, Side, Worker, peer_python


def run_family(family: str, args, tmp: Path, log) -> dict:
    """Build the model once, start the workers, alternate timed runs, check, return the row."""
    tiny = args.tiny
    ckpt = tmp / family
    log(f"\n== {TINY_LABEL[family] if tiny else LABEL[family]}: building the random model (seed {SEED}) ...")
    if args.check_only:  # no memory to measure: build here, and run kn in this process
        save_checkpoint(family, tiny, ckpt)
    else:
        subprocess.run([sys.executable, str(ENTRY), "--build", family, "--ckpt", str(ckpt)]
                       + (["--tiny"] if tiny else []), check=True, cwd=str(REPO),
                       env=dict(os.environ, TRANSFORMERS_VERBOSITY="error"))
    ps = prompts(family, args.prompts)
    use_peer = family in PEER_TYPE and args.peer_ok
    workers: dict[str, Worker] = {}
    row = {"family": family, "tiny": tiny, "n_prompts": len(ps)}
    try:
        if use_peer:
            workers["peer"] = Worker(f"{family}-peer", peer_python(), ckpt, args.threads, tmp, side="peer")
        if args.check_only:
            workers["fast"] = Side("kn", ckpt, args.threads)
            workers["ref"] = Side("kn", ckpt, args.threads, reference=True)
        else:
            workers["fast"] = Worker(f"{family}-kn-fast", sys.executable, ckpt, args.threads, tmp, side="kn")
            workers["ref"] = Worker(f"{family}-kn-ref", sys.executable, ckpt, args.threads, tmp, side="kn",
                                    reference=True)
        for name, w in workers.items():
            log(f"   {name:5s} side: torch {w.info['torch']}, transformers {w.info['transformers']}, "
                f"{w.info['threads']} threads, load {w.info['load_s']:.1f} s, RSS {w.info['load_rss_mb']:.0f} MB")
        row["versions"] = {n: (w.info["torch"], w.info["transformers"]) for n, w in workers.items()}

        # the same weights and tokens on both sides: plain forward passes, compared
        if use_peer:
            worst = 0.0
            for prompt, answer in ps:
                a = workers["peer"].ask(op="prob", prompt=prompt, answer=answer)
                b = workers["fast"].ask(op="prob", prompt=prompt, answer=answer)
                if a["ids"] != b["ids"] or a["gold"] != b["gold"]:
                    raise AssertionError(f"{family}: tokenization differs between the environments: "
                                         f"{a['ids']}/{a['gold']} vs {b['ids']}/{b['gold']}")
                worst = max(worst, abs(a["prob"] - b["prob"]) / max(abs(b["prob"]), 1e-30))
            row["weights_rel"] = worst
            log(f"   same weights and tokens in both environments: P(answer) agrees to {worst:.1e} relative")

        warm = [] if args.check_only else [n for n in ("peer", "fast") if n in workers]
        for n in warm:  # one untimed call each: lazy initialisation is not attribution
            workers[n].ask(op="score", prompt=ps[0][0], answer=ps[0][1], steps=args.steps, batch_size=BATCH)
        times: dict[str, list[list[float]]] = {n: [[] for _ in ps] for n in workers}
        cpu: dict[str, list[list[float]]] = {n: [[] for _ in ps] for n in workers}
        scores: dict[str, list[Path]] = {n: [tmp / f"{family}-{n}-{i}.pt" for i in range(len(ps))] for n in workers}
        reps = 1 if args.check_only else args.reps
        ref_reps = 1 if args.check_only else min(args.ref_reps, reps)
        for rep in range(reps):
            order = [n for n in ("peer", "fast") if n in workers]
            if args.check_only and family != "bert":  # the package's scores are compared on BERT only
                order = ["fast"]
            if rep % 2:
                order.reverse()
            if rep < ref_reps:
                order.append("ref")
            for i, (prompt, answer) in enumerate(ps):
                for n in order:
                    if not args.check_only:
                        time.sleep(0.2)  # let the previous worker's threads go idle
                    r = workers[n].ask(op="score", prompt=prompt, answer=answer, steps=args.steps,
                                       batch_size=BATCH, out=str(scores[n][i]) if rep == 0 else "")
                    times[n][i].append(r["seconds"])
                    cpu[n][i].append(r["cpu"])
                    args.max_load = max(args.max_load, os.getloadavg()[0])
            if not args.check_only:
                log(f"   rep {rep + 1}/{reps}: " + ", ".join(
                    f"{n} {statistics.median(t[-1] for t in times[n]):.2f} s/prompt" for n in order))
        for n, w in list(workers.items()):
            row[f"{n}_peak_mb"] = w.close()
            del workers[n]
    finally:
        for w in workers.values():
            w.kill()

    def med(n, d):  # median over prompts of each prompt's median over repetitions
        if n not in d or not all(d[n]):
            return None
        return statistics.median(statistics.median(t) for t in d[n])

    for n in ("peer", "fast", "ref"):
        row[f"{n}_s"] = med(n, times)
        row[f"{n}_cpu"] = med(n, cpu)
    row["times"] = times
    return agreement(row, scores, family, use_peer)


def run_ab(family: str, args, tmp: Path, log) -> dict:
    """kn's fast path from this tree (B) against another checkout (A, `--ab PATH`): the same weights,
    prompts and threads, one worker each, alternating per prompt (the order flips every repetition)."""
    ckpt = tmp / family
    log(f"\n== {LABEL[family]}: A = {args.ab}, B = {REPO}")
    subprocess.run([sys.executable, str(ENTRY), "--build", family, "--ckpt", str(ckpt)],
                   check=True, cwd=str(REPO), env=dict(os.environ, TRANSFORMERS_VERBOSITY="error"))
    ps = prompts(family, args.prompts)
    trees = {"A": Path(args.ab).resolve(), "B": REPO}
    workers = {n: Worker(f"{family}-{n}", sys.executable, ckpt, args.threads, tmp, side="kn", tree=t)
               for n, t in trees.items()}
    times = {n: [[] for _ in ps] for n in workers}
    outs = {n: [tmp / f"{family}-ab-{n}-{i}.pt" for i in range(len(ps))] for n in workers}
    try:
        for n in workers:  # one untimed call each
            workers[n].ask(op="score", prompt=ps[0][0], answer=ps[0][1], steps=args.steps, batch_size=BATCH)
        for rep in range(args.reps):
            order = ["A", "B"] if rep % 2 == 0 else ["B", "A"]
            for i, (prompt, answer) in enumerate(ps):
                for n in order:
                    time.sleep(0.2)
                    r = workers[n].ask(op="score", prompt=prompt, answer=answer, steps=args.steps,
                                       batch_size=BATCH, out=str(outs[n][i]) if rep == 0 else "")
                    times[n][i].append(r["seconds"])
                    args.max_load = max(args.max_load, os.getloadavg()[0])
            log(f"   rep {rep + 1}/{args.reps}: " + ", ".join(
                f"{n} {statistics.median(t[-1] for t in times[n]):.3f} s/prompt" for n in workers))
        for w in workers.values():
            w.close()
    finally:
        for w in workers.values():
            w.kill()
    import torch

    med = {n: statistics.median(statistics.median(t) for t in times[n]) for n in workers}
    ratios = [statistics.median(b) / statistics.median(a) for a, b in zip(times["A"], times["B"])]
    best = {n: statistics.median(min(t) for t in times[n]) for n in workers}  # least disturbed run
    diff = max(rel_err(torch.load(b), torch.load(a)) for a, b in zip(outs["A"], outs["B"]))
    return {"family": family, "A_s": med["A"], "B_s": med["B"], "ratio": med["B"] / med["A"],
            "ratio_min": best["B"] / best["A"],
            "ratio_lo": min(ratios), "ratio_hi": max(ratios), "scores_rel": diff, "n_prompts": len(ps)}


def report_ab(rows: list[dict], args) -> str:
    lines = [f"A: `{args.ab}` ({_commit(Path(args.ab))}); B: this tree ({_commit(REPO)}); "
             f"{args.reps} alternating repetitions, {args.threads} threads, steps {args.steps}, rule linspace; "
             f"highest 1-minute load average {args.max_load:.1f}.", "",
             "| model | A s/prompt | B s/prompt | B/A (median) | B/A (fastest run) | B/A per prompt (min-max) "
             "| scores B vs A (rel.) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {LABEL[r['family']]} | {r['A_s']:.3f} | {r['B_s']:.3f} | {r['ratio']:.3f} | {r['ratio_min']:.3f} | "
                     f"{r['ratio_lo']:.3f}-{r['ratio_hi']:.3f} | {r['scores_rel']:.1e} |")
    return "\n".join(lines)


def _commit(tree: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"


def describe_machine(threads: int) -> str:
    """CPU model, cores, and the fp32 matmul rate at the benchmark's thread count (a yardstick)."""
    import torch

    name = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    torch.set_num_threads(threads)
    a, w = torch.randn(240, 768), torch.randn(3072, 768)
    for _ in range(3):
        a @ w.T
    n, t = 30, time.perf_counter()
    for _ in range(n):
        a @ w.T
    gflops = 2 * 240 * 768 * 3072 * n / (time.perf_counter() - t) / 1e9
    return (f"{name}, {os.cpu_count()} cores, fp32 matmul {gflops:.0f} GFLOP/s at {threads} threads, "
            f"load average {os.getloadavg()[0]:.1f} at start")


def _fmt_s(x):
    return "—" if x is None else f"{x:.2f}"


def _fmt_mb(x):
    return "—" if x is None else f"{x:.0f}"


def _fmt_x(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}x"



def speed_tables(rows: list[dict], args) -> list[str]:
    """Seconds, CPU seconds and peak memory per side (markdown lines; none in --check-only)."""
    lines = []
    if not args.check_only:
        lines += [
            f"Steps {args.steps}, package batch size {BATCH}, linspace path on both sides, {args.threads} torch "
            f"threads, {rows[0]['n_prompts']} prompts x {args.reps} repetitions (reference path: "
            f"{min(args.ref_reps, args.reps)}), median seconds per prompt; peak = RSS high-water mark of "
            f"the side's own worker process (model included).", "",
            "| model | peer s/prompt | kn s/prompt | ratio | kn peak MB | peer peak MB |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            name = TINY_LABEL[r["family"]] if r["tiny"] else LABEL[r["family"]]
            lines.append(f"| {name} | {_fmt_s(r['peer_s'])} | {_fmt_s(r['fast_s'])} | {_fmt_x(r['peer_s'], r['fast_s'])}"
                         f" | {_fmt_mb(r.get('fast_peak_mb'))} | {_fmt_mb(r.get('peer_peak_mb'))} |")
        lines += ["", "CPU seconds per prompt (process time summed over threads; a busy machine distorts "
                  "these less than wall time):", "",
                  "| model | peer | kn fast | kn reference | peer / kn | reference / fast |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            name = TINY_LABEL[r["family"]] if r["tiny"] else LABEL[r["family"]]
            lines.append(f"| {name} | {_fmt_s(r['peer_cpu'])} | {_fmt_s(r['fast_cpu'])} | {_fmt_s(r['ref_cpu'])} | "
                         f"{_fmt_x(r['peer_cpu'], r['fast_cpu'])} | {_fmt_x(r['ref_cpu'], r['fast_cpu'])} |")
        cores = os.cpu_count() or 1
        if args.max_load > cores + 0.5:
            lines += ["", f"**Warning: the machine was busy during this run (1-minute load average up to "
                          f"{args.max_load:.1f} on {cores} cores): wall times are inflated; rerun on an idle "
                          f"machine for numbers to quote.**"]
        lines += ["", "| model | kn reference s/prompt | kn fast s/prompt | ratio | reference peak MB | fast peak MB |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            name = TINY_LABEL[r["family"]] if r["tiny"] else LABEL[r["family"]]
            lines.append(f"| {name} | {_fmt_s(r['ref_s'])} | {_fmt_s(r['fast_s'])} | {_fmt_x(r['ref_s'], r['fast_s'])}"
                         f" | {_fmt_mb(r.get('ref_peak_mb'))} | {_fmt_mb(r.get('fast_peak_mb'))} |")
    return lines


def target_lines(rows: list[dict], args) -> list[str]:
    """Issue 5's targets, met or not in this run (real-size timed runs only)."""
    lines = []
    if not args.check_only and not args.tiny:
        lines += ["", "Targets (ratios measured in this run):", ""]
        by = {r["family"]: r for r in rows}
        targets = []
        if "bert" in by and by["bert"]["peer_s"]:
            targets.append(("kn >= 3x the package on BERT-base", by["bert"]["peer_s"] / by["bert"]["fast_s"] >= 3))
        if "gpt2" in by and by["gpt2"]["peer_s"]:
            targets.append(("kn >= 10x the package on GPT-2 small", by["gpt2"]["peer_s"] / by["gpt2"]["fast_s"] >= 10))
        if "gemma" in by:
            targets.append(("gemma-3-270m fast path >= 5x the reference path",
                            by["gemma"]["ref_s"] / by["gemma"]["fast_s"] >= 5))
            targets.append(("gemma-3-270m kn peak memory < 3 GB", by["gemma"]["fast_peak_mb"] < 3 * 1024))
        for what, good in targets:
            lines.append(f"- {what}: {'MET' if good else 'NOT MET'}")
    return lines
