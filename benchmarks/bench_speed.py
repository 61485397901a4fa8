#!/usr/bin/env python
"""Issue 16's benchmark, in one run: every part below, one after another on an idle machine, into one
markdown file (benchmarks/results-speed.md) and the README's speed section.

    python benchmarks/bench_speed.py                 # all parts (about 70 minutes on 2 idle cores)
    python benchmarks/bench_speed.py --parts fast,run --pararel ../shared/data/pararel

Parts (each a script of its own, run here with the options shown):
  fast  bench_fast.py: kn calibrated per model (the recommendation) and at the fixed fast setting vs the
        package (BERT-base, GPT-2 small), each side's error against the exact integral, GFLOP/s against
        the matmul rate, a whole fact;
  run   bench_run.py: `kn run` throughput on gemma-3-270m (PARAREL facts given --pararel, else built-in),
        at the paper's setting, the fixed fast one and the one kn.calibrate picks on 3 other facts;
  amig  bench_amig.py: AMIG's cost over zero-baseline IG;
  bf16  bench_bf16.py: bfloat16 against float32 weights, speed, score error, set agreement, profiles.
Each part runs in its own process and asks for kn's allocator tuning there (`kn.allocator.keep_freed_memory`).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

BEGIN, END = "<!-- bench_speed:begin -->", "<!-- bench_speed:end -->"
PARTS = ("fast", "run", "amig", "bf16")


def commands(args, fast: str) -> dict[str, list[str]]:
    run_data = ["--data", f"pararel:{args.pararel}", "--facts", "9"] if args.pararel else ["--facts", "8"]
    return {
        "fast": ["bench_fast.py", "--fast", fast, "--out", ""],
        "run": ["bench_run.py", "--model", "gemma-3-270m", "--fast", fast, "--calibrate", "3", *run_data],
        "amig": ["bench_amig.py", "--reps", "2"],
        "bf16": ["bench_bf16.py", "--prompts", "3"],
    }


def main(argv=None) -> int:
    import bench_attribution as B
    from bench_fast import recommended

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--fast", default=recommended(), help="the fast setting RULE:STEPS (default: the recommendation)")
    ap.add_argument("--pararel", default=None, help="a PARAREL directory for the run part")
    ap.add_argument("--out", default=str(BENCH / "results-speed.md"))
    ap.add_argument("--readme", default=str(REPO / "README.md"), help="README whose speed section is replaced ('' none)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise SystemExit(f"unknown part(s) {', '.join(bad)}; choose from {', '.join(PARTS)}")
    cmds = commands(args, args.fast)
    machine = B.describe_machine(2)
    head = (f"Command: `python benchmarks/bench_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`. "
            f"Commit {B._commit(REPO)}, {time.strftime('%Y-%m-%d')}, {machine}. Fixed fast setting: `{args.fast}`; the recommendation is kn.calibrate per model.")
    sections, failed = [head], []

    def write():
        text = "\n\n".join(sections) + "\n"
        Path(args.out).write_text("# Speed: issue 16's benchmark, one run\n\n" + text)
        return text

    for part in parts:
        cmd = [sys.executable, str(BENCH / cmds[part][0]), *cmds[part][1:]]
        print(f"== {part}: {' '.join(cmds[part])}", flush=True)
        t = time.perf_counter()
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                             env=dict(os.environ, TRANSFORMERS_VERBOSITY="error"))
        secs = time.perf_counter() - t
        body = out.stdout[out.stdout.index("Fixed fast setting"):] if part == "fast" and "Fixed fast setting" in out.stdout \
            else out.stdout
        if out.returncode:  # the other parts still run; this one's section says what failed
            failed.append(part)
            sys.stderr.write(out.stderr[-4000:])
            body += f"\n\n**Failed** (exit {out.returncode}) after {secs:.0f} s; the end of its errors:\n\n```\n" \
                    f"{out.stderr[-1500:]}\n```"
        sections.append(f"### {part} (`{' '.join(cmds[part])}`, {secs:.0f} s)\n\n{body.strip()}")
        print(body, flush=True)
        write()  # an interrupted run keeps the parts it finished
    text = write()
    if args.readme and not failed:
        readme = Path(args.readme)
        r = readme.read_text()
        if BEGIN in r and END in r:
            readme.write_text(r[: r.index(BEGIN) + len(BEGIN)] + "\n" + text + r[r.index(END):])
    if failed:
        print(f"parts failed: {', '.join(failed)}; the README is left as it was; see {args.out}")
        return 1
    print(f"written to {args.out}" + (f" and {args.readme}" if args.readme else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
