"""A run directory as kn wrote it before kn.runs (config and journal FORMAT 1), written by hand.

The book's recorded runs were made by that code; `load_run` and `kn.recording.record_run` must read
such a directory forever. The records below have exactly the shapes the old `kn/run.py` appended.
"""
from __future__ import annotations

import json
from pathlib import Path

CONFIG = {
    "format": 1,
    "kn_version": "0.1.0",
    "settings": {"language": "en", "method": "ig", "steps": 20, "threshold": 0.2, "share": 0.7, "min_prompts": 3,
                 "controls": True, "seed": 0, "suppress_factor": 0.0, "amplify_factor": 2.0, "kns_per_fact": [2, 5],
                 "share_step": 0.05, "share_tries": 6},
    "model": {"model": "tiny-GPT-2", "family": "GPT-2", "n_layers": 3, "width": 48, "dtype": "torch.float32",
              "kn_version": "0.1.0"},
    "data": {"name": "tiny", "fingerprint": "ab" * 32, "n_facts": 4, "relations": ["capital", "language"]},
    "created": "2026-11-30T12:00:00+00:00",
}
FRANCE = ["the capital of France is", "France capital city is", "in France the capital is"]
GERMANY = ["the capital of Germany is", "Germany capital city is", "in Germany the capital is"]
ITALY = ["Italy speaks", "the official language of Italy is", "in Italy the language is"]
RECORDS = [
    {"type": "fact", "fact_id": "capital/France", "relation": "capital", "subject": "France", "answer": "Paris",
     "prompts": FRANCE, "sets": [[[2, 5], [2, 7]], [[1, 3], [2, 5]], [[2, 5], [2, 7]]],
     "p_before": [0.2, 0.4, 0.3], "seconds": 1.5},
    {"type": "fact", "fact_id": "capital/Germany", "relation": "capital", "subject": "Germany", "answer": "Berlin",
     "prompts": GERMANY, "sets": [[[0, 1], [2, 5]], [[2, 5]], [[2, 5]]], "p_before": [0.1, 0.1, 0.1], "seconds": 1.25},
    {"type": "fact", "fact_id": "capital/Portugal", "relation": "capital", "subject": "Portugal",
     "error": {"type": "ValueError", "message": "the tokenizer cannot represent the answer 'Lisbon'"}, "seconds": 0.25},
    {"type": "relation", "relation": "capital", "share": 0.7, "facts": ["capital/France", "capital/Germany"],
     "neurons": {"capital/France": [[2, 5], [2, 7]], "capital/Germany": [[2, 5]]}},
    {"type": "verify", "fact_id": "capital/France", "relation": "capital",
     "fact": {"fact_id": "capital/France", "before": [0.2, 0.4, 0.3], "suppressed": [0.1, 0.2, 0.3],
              "amplified": [0.4, 0.4, 0.4]},
     "other": {"fact_id": "language/Italy", "before": [0.5, 0.5, 0.5], "suppressed": [0.5, 0.5, 0.5],
               "amplified": [0.5, 0.6, 0.7]},
     "same": {"fact_id": "capital/Germany", "before": [0.1, 0.1, 0.1], "suppressed": [0.05, 0.1, 0.15],
              "amplified": [0.1, 0.1, 0.1]}},
    {"type": "verify", "fact_id": "capital/Germany", "relation": "capital",
     "error": {"type": "RuntimeError", "message": "boom"}},
    {"type": "fact", "fact_id": "language/Italy", "relation": "language", "subject": "Italy", "answer": "Italian",
     "prompts": ITALY, "sets": [[[1, 1]], [[1, 2]], [[1, 1]]], "p_before": [0.5, 0.5, 0.5], "seconds": 2.0},
    {"type": "relation", "relation": "language", "share": 0.65, "facts": ["language/Italy"],
     "neurons": {"language/Italy": []}},
]


def write_format1_run(out: Path, records: list[dict] = RECORDS) -> Path:
    """The run directory (config.json, journal.jsonl) as the old code left it, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(CONFIG, indent=1), encoding="utf-8")
    with open(out / "journal.jsonl", "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return out
