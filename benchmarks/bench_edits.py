"""Seconds per edit per method (kn.edits) on a packaged model: one kn run with the phases locate and
edit over a few built-in facts; prints the mean of each method's edit_seconds (making the edit) and
seconds (making and measuring it). Not a timed test.

    python benchmarks/bench_edits.py --model gemma-3-270m --relations capital,official_language --facts 2
"""
from __future__ import annotations

import argparse
import tempfile

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
        res = kn.run(lm, chosen, out, steps=20, phases=("locate", "edit"), edit_methods=a.methods.split(","),
                     progress=False)
        t = res.edits.groupby("method")[["edit_seconds", "seconds"]].agg(["mean", "count"])
    print(f"{a.model}: seconds per edit (one fact at a time)")
    print(t.round(2).to_string())


if __name__ == "__main__":
    main()
