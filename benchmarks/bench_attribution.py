#!/usr/bin/env python
"""Attribution benchmark: kn against the EleutherAI `knowledge-neurons` package (PyPI 0.0.2).

One command, from the repository root, in kn's environment:

    python benchmarks/bench_attribution.py

It creates the package's own virtual environment on first use (benchmarks/.peer-venv: torch 2.13.0
CPU, transformers<5, knowledge-neurons 0.0.2; about a minute), builds random-init models of real
size with fixed seeds (bert-base-cased, GPT-2 small and gemma-3-270m configs; offline tokenizers),
saves each once and loads the same weights on both sides, then times, alternating and repeated:
  - the package: KnowledgeNeurons(model, tokenizer, model_type).get_scores(prompt, answer,
    batch_size=20, steps=20), in a worker process of the peer environment;
  - kn: kn.attribute(lm, prompt, answer, steps=20, rule="linspace"), the fast path, in a worker;
  - kn reference path (reference=True), in a worker of its own.
Every side runs in its own process, so each peak RSS is clean. It prints a markdown table and
writes it to benchmarks/results.md. Correctness checks run on the same outputs:
  - BERT: kn's linspace scores equal the package's, full [layers, width] matrix, to 1e-4 relative;
  - GPT-2 (the package hooks the pre-GELU tensor there) and Gemma-3: kn fast path vs kn reference.
"Relative" is max|a - b| / max|b| over the whole matrix.

Other modes:
    python benchmarks/bench_attribution.py --check-only --tiny   # CI: tiny models, checks, no timing
    python benchmarks/bench_attribution.py --setup-peer          # only create the peer environment
    python benchmarks/bench_attribution.py --models gemma --reps 5 --threads 2
    python benchmarks/bench_attribution.py --ab ../old-checkout --reps 5   # kn (A) vs this tree (B)
In --check-only mode the kn-vs-package check runs only if the peer environment exists (else it is
skipped with the reason printed); kn fast vs reference always runs. No speed target is ever asserted
by a unit test: tests/unit/test_benchmark_checks.py runs the tiny checks only.

This file is the entry point (and, with ``--worker peer|kn``, the worker, run by each side's
interpreter); the work is split by what it does: attribution_models.py (prompts, tokenizers, models,
checkpoints), attribution_sides.py (the package's environment, one worker process per side, each
timing its calls and reporting its peak RSS), attribution_speed.py (the alternating timed runs, --ab,
tables, targets) and attribution_checks.py (the score agreement checks). No module level here or
there imports more than the standard library; the names other benchmarks and the tests use are
re-exported here.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from attribution_checks import (REL_TOL_PEER, REL_TOL_REF, REL_TOL_REF_TINY, agreement,  # noqa: E402,F401
                                check_fast_vs_reference, check_lines)
from attribution_models import (BATCH, FACTS, FAMILIES, LABEL, PARAPHRASES, PEER_TYPE, SEED, STEPS,  # noqa: E402,F401
                                TINY_LABEL, build_model, build_tokenizer, hf_tokenizer, load_checkpoint,
                                model_class, model_config, paraphrases, peer_answer, plain_prob, prompts,
                                quiet_transformers, rel_err, save_checkpoint)
from attribution_sides import (PEER_VENV, REPO, Side, Worker, keep_freed_memory, kn_lm, kn_tree,  # noqa: E402,F401
                               peer_python, peer_ready, setup_peer, worker_main)
from attribution_speed import (_commit, describe_machine, report_ab, run_ab, run_family,  # noqa: E402,F401
                               speed_tables, target_lines)

RESULTS = BENCH_DIR / "results.md"


def report(rows: list[dict], args, setup_s: float | None) -> tuple[str, bool]:
    """Markdown tables, checks and targets; returns (text, everything passed)."""
    checks, ok = check_lines(rows, args)
    lines = speed_tables(rows, args) + checks + target_lines(rows, args)
    env = {}
    for r in rows:
        for n, (tv, trv) in r.get("versions", {}).items():
            env.setdefault({"peer": "package", "fast": "kn", "ref": "kn"}[n], f"torch {tv}, transformers {trv}")
    env = [f"{n}: {v}" for n, v in env.items()]
    lines += ["", "Environments: " + "; ".join(env) + "."]
    if setup_s:
        lines.append(f"Peer environment created in this run in {setup_s:.0f} s.")
    return "\n".join(lines), ok


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(FAMILIES), help="comma-separated subset of bert,gpt2,gemma")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on every side (default 2)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per prompt (default 3)")
    p.add_argument("--ref-reps", type=int, default=1, help="repetitions of the kn reference path (default 1)")
    p.add_argument("--prompts", type=int, default=len(FACTS), help=f"how many prompts (max {len(FACTS)})")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--check-only", action="store_true", help="correctness checks only, no timing")
    p.add_argument("--tiny", action="store_true", help="tiny models (CI); with --check-only")
    p.add_argument("--no-peer", action="store_true", help="leave the package out")
    p.add_argument("--setup-peer", action="store_true", help="only create the peer environment")
    p.add_argument("--out", default=str(RESULTS), help="where the table goes ('' for nowhere)")
    p.add_argument("--ab", metavar="TREE", help="time kn's fast path of another checkout (A) against this one "
                   "(B), alternating; prints B/A per model and nothing else (no package, no reference path)")
    # internal
    p.add_argument("--worker", choices=["peer", "kn"], help=argparse.SUPPRESS)
    p.add_argument("--build", choices=FAMILIES, help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)
    p.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rule", default="linspace", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, Path(args.ckpt), args.threads, args.reference, args.rule)
        return 0
    if args.build:
        save_checkpoint(args.build, args.tiny, Path(args.ckpt))
        return 0
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    if args.setup_peer:
        setup_peer(log=log)
        return 0
    families = [f.strip() for f in args.models.split(",") if f.strip()]
    for f in families:
        if f not in FAMILIES:
            raise SystemExit(f"unknown model {f!r}; choose from {','.join(FAMILIES)}")
    if args.ab:
        if not (Path(args.ab) / "kn" / "__init__.py").is_file():
            raise SystemExit(f"--ab {args.ab}: not a kn checkout (no kn/__init__.py there)")
        args.max_load = os.getloadavg()[0]
        log(f"machine: {describe_machine(args.threads)}")
        tmp = Path(tempfile.mkdtemp(prefix="kn-ab-"))
        try:
            rows = [run_ab(f, args, tmp, log) for f in families]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print("\n" + report_ab(rows, args), flush=True)
        return 0
    setup_s = None
    args.peer_ok, args.peer_skip_reason = False, ""
    if args.no_peer:
        args.peer_skip_reason = "--no-peer"
    elif not any(f in PEER_TYPE for f in families):
        args.peer_skip_reason = "no model the package supports was selected"
    elif args.check_only and not peer_ready():
        args.peer_skip_reason = (f"the peer environment {PEER_VENV.relative_to(REPO)} is missing; create it with "
                                 "`python benchmarks/bench_attribution.py --setup-peer` (about a minute)")
    else:
        setup_s = setup_peer(log=log) or None
        args.peer_ok = True
    if args.peer_skip_reason:
        log(f"SKIP kn-vs-package comparison: {args.peer_skip_reason}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that workers and temp files get cleaned
    args.max_load = os.getloadavg()[0]
    if not args.check_only and args.max_load > (os.cpu_count() or 1) + 0.5:
        log(f"warning: the machine is busy (1-minute load average {args.max_load:.1f}); timings will be inflated")
    machine = ""
    if not args.check_only:
        machine = describe_machine(args.threads)
        log(f"machine: {machine}")
    tmp = Path(tempfile.mkdtemp(prefix="kn-bench-"))
    try:
        rows = [run_family(f, args, tmp, log) for f in families]
    except BaseException:
        for p in tmp.iterdir():  # keep the worker logs, drop checkpoints and scores
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.suffix != ".log":
                p.unlink()
        log(f"(worker logs kept in {tmp})")
        raise
    text, ok = report(rows, args, setup_s)
    shutil.rmtree(tmp, ignore_errors=True)
    print("\n" + text, flush=True)
    if args.out and not args.check_only and not args.tiny:
        Path(args.out).write_text(
            "# Attribution benchmark: kn vs knowledge-neurons 0.0.2\n\n"
            f"Command: `{' '.join(['python benchmarks/bench_attribution.py'] + list(argv or sys.argv[1:]))}`. "
            f"Measured {time.strftime('%Y-%m-%d')} on {machine}.\n\n" + text + "\n")
        log(f"\nwritten to {Path(args.out).resolve().relative_to(REPO) if Path(args.out).resolve().is_relative_to(REPO) else args.out}")
    if not ok:
        log("CHECKS FAILED")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
