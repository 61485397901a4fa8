"""The quadrature of a full-size run (book/results/record.sh): what `kn.calibrate` picks for a model
with the AMIG baseline, on one prompt per language of 3 known built-in facts of relations the runs
do not use, against the paper's setting on each prompt.

    python book/results/calibrate.py gemma-3-270m en,zh     # -> book/results/calibration/gemma-3-270m-amig.json
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import kn
import kn.data
from kn import recording
from kn.data import select_facts
from kn.data.prepare import prepare_fact

RELATIONS = ["birthplace", "sport", "element_symbol"]  # none of record.sh's


def main(model: str, languages: list[str]) -> Path:
    lm = kn.load(model)
    facts = select_facts(kn.data.builtin(), relations=RELATIONS, per_relation=1, language=languages, lm=lm,
                         known=True, seed=0)
    queries = []
    for f in facts:
        for lang in languages:
            p = prepare_fact(f, lm, lang)
            queries += list(zip(p.prompts, p.answers))[:1]
    start = time.perf_counter()
    cal = kn.calibrate(lm, queries, kn.IG(baseline="amig"))
    seconds = time.perf_counter() - start
    out = Path(__file__).resolve().parent / "calibration" / f"{model}-amig.json"
    out.parent.mkdir(exist_ok=True)
    doc = {"model": model, "languages": languages, "queries": queries, "settings": cal.settings.to_dict(),
           "against": list(cal.against) if cal.against else None, "exact": cal.exact,
           "errors": list(map(float, cal.errors)), "bounds": list(map(float, cal.bounds)),
           "measured": [{"rule": r, "steps": m, "errors": list(map(float, e))} for r, m, e in cal.grid],
           "provenance": recording.provenance(f"python book/results/calibrate.py {model} {','.join(languages)}",
                                              seconds=round(seconds, 1))}
    out.write_text(json.dumps(doc, ensure_ascii=False, indent=1, default=str) + "\n")
    print(f"{model}: {cal.settings.rule} {cal.settings.steps} ({seconds:.0f} s) -> {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(",") if len(sys.argv) > 2 else ["en"])
