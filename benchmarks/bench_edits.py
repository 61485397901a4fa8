"""Seconds per edit per method (kn.edits) on a packaged model: a kn run with the phase locate over a
few built-in facts, then the same run resumed with the phase edit; prints the mean of each method's
edit_seconds (making the edit) and seconds (making and measuring it, but the fluency texts of the
value-slot methods, which a fact's edits decode together), and the edit phase's wall seconds per fact
(every method, everything measured). Not a timed test.

    python benchmarks/bench_edits.py --model gemma-3-270m --relations capital,official_language --facts 2
"""
from __future__ import annotations

import argparse
import tempfile
import time

import kn
import kn.data
from kn.data import select_facts
from kn.edits import METHODS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--relations", default="capital,official_language")
    ap.add_argument("--facts", type=int, default=2, help="facts per relation")
    ap.add_argument("--methods", default=",".join(METHODS))
    a = ap.parse_args()
    relations = a.relations.split(",")
    lm = kn.load(a.model)
    chosen = select_facts(kn.data.load("builtin", relations=relations), relations=relations, per_relation=a.facts,
                          lm=lm, known=True, seed=0)
    with tempfile.TemporaryDirectory() as out:
        kn.run(lm, chosen, out, steps=20, phases=("locate",), progress=False)
        t0 = time.perf_counter()
        res = kn.run(lm, chosen, out, steps=20, phases=("locate", "edit"), edit_methods=a.methods.split(","),
                     progress=False)
        wall = time.perf_counter() - t0
        t = res.edits.groupby("method")[["edit_seconds", "seconds"]].agg(["mean", "count"])
    facts = res.edits.fact_id.nunique()
    print(f"{a.model}: seconds per edit (one fact at a time)")
    print(t.round(2).to_string())
    print(f"edit phase: {wall:.1f} s for {facts} facts, {wall / max(1, facts):.1f} s per fact "
          f"({len(t)} methods, every metric)")


if __name__ == "__main__":
    main()
