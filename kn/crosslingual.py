"""Cross-lingual effects of knowledge neurons (Chen et al. 2024), the paper's conditions with the
reference code's bug fixed, over a multilingual run (`kn.run(..., languages=[...])`).

For each fact with knowledge neurons in at least two languages, and each language pair (A, B):

- ``likn``:  the fact's language-independent neurons (`kn.likn.fact_likn`), measured in every language;
- ``mono``:  A's knowledge neurons measured in B (A == B: the monolingual verification; A != B: the
  paper's "A's neurons on B's prompts" and, with the pair swapped, "B's on A's");
- ``union``: A's and B's together, measured in A and in B (what the reference code's "sequential"
  condition meant to test; there only one of the two sets ever counted).

Each neuron set is suppressed (x `suppress_factor`) and amplified (x `amplify_factor`) at the answer
position, on the fact's prompts in the measured language and on an unrelated fact's (another
relation, located in every language, picked per fact by a seeded RNG). The records go to a journal
(one per fact, fsynced), so an interrupted call resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from . import checks
from .likn import fact_likn
from .runs.journal import Journal
from .stats import bootstrap_mean
from .verify import effect, ratio_of_means

log = logging.getLogger(__name__)

JOURNAL = "crosslingual.jsonl"
COLUMNS = ["fact_id", "relation", "condition", "source", "measured", "target", "target_fact", "n_neurons",
           "p_before", "p_suppressed", "p_amplified", "suppression", "amplification"]


@dataclass(frozen=True)
class CrossLingual:
    """How the cross-lingual effects are measured: the two factors and the seed of the unrelated facts."""

    suppress_factor: float = 0.0
    amplify_factor: float = 2.0
    seed: int = 0

    def __post_init__(self):
        checks.number(self.suppress_factor, "suppress_factor")
        checks.number(self.amplify_factor, "amplify_factor")
        checks.integer(self.seed, "seed")


def neuron_sets(per_language: dict[str, set], languages: Sequence[str]) -> list[tuple[str, str, str, set]]:
    """(condition, source, measured, neurons) of one fact, from its knowledge neurons per language
    (languages without neurons left out): the conditions of the module docstring."""
    have = [l for l in languages if per_language.get(l)]
    out = []
    shared = fact_likn({l: per_language[l] for l in have})
    if shared:
        out += [("likn", "all", m, shared) for m in have]
    out += [("mono", a, b, per_language[a]) for a in have for b in have]
    for i, a in enumerate(have):
        for b in have[i + 1:]:
            both = per_language[a] | per_language[b]
            out += [("union", f"{a}+{b}", m, both) for m in (a, b)]
    return out


class _Unrelated:
    """A seeded fact of another relation, located in every language."""

    def __init__(self, res, seed: int):
        located = [set(r.located_facts()) for r in res.runs.values()]
        every = set.intersection(*located) if located else set()
        rel = res.relation_of()
        self.ids = sorted(every)
        self.relation = rel
        self.seed = seed

    def __call__(self, fact_id: str) -> str | None:
        cands = [i for i in self.ids if self.relation[i] != self.relation[fact_id]]
        return random.Random(f"{self.seed}|unrelated|{fact_id}").choice(cands) if cands else None


def effects(lm, res, settings: CrossLingual | None = None, *, out: str | Path | None = None,
            progress: bool = True):
    """The tidy table (`COLUMNS`) of every fact's conditions: a row per (fact, condition, source,
    measured language, target "related" | "unrelated"). out: the journal's directory (default the
    run's); a call with the same settings resumes it, other settings are refused."""
    import pandas as pd

    s = settings or CrossLingual()
    if not isinstance(s, CrossLingual):
        raise checks.ArgumentError(f"settings must be a kn.crosslingual.CrossLingual, got {type(s).__name__}")
    langs = res.languages
    journal = Journal(Path(out or res.out_dir) / JOURNAL)
    header = {"type": "settings", **dataclasses.asdict(s), "languages": langs, "model": res.config["model"]["model"]}
    done = _resume(journal, header)
    sets = res.sets()
    per_fact = {fid: {l: set(sets[l].get(fid, ())) for l in langs} for fid in res.facts.fact_id.unique()}
    todo = [f for f, per in per_fact.items() if sum(bool(v) for v in per.values()) >= 2]
    unrelated = _Unrelated(res, s.seed)
    rel = res.relation_of()
    try:
        for fid in tqdm(todo, desc="cross-lingual", unit="fact", disable=not progress):
            if fid in done:
                continue
            u = unrelated(fid)
            rows = []
            for cond, src, meas, neurons in neuron_sets(per_fact[fid], langs):
                for target, tf in (("related", fid), ("unrelated", u)):
                    if tf is None:
                        continue
                    queries = res.runs[meas].fact_queries(tf)
                    e = effect(lm, [p for p, _ in queries], [a for _, a in queries], sorted(neurons),
                               s.amplify_factor, s.suppress_factor)
                    rows.append({"condition": cond, "source": src, "measured": meas, "target": target,
                                 "target_fact": tf, "n_neurons": len(neurons), "before": e.before.tolist(),
                                 "suppressed": e.suppressed.tolist(), "amplified": e.amplified.tolist()})
            rec = {"type": "fact", "fact_id": fid, "relation": rel[fid], "rows": rows}
            journal.append(rec)
            done[fid] = rec
    finally:
        journal.close()
    return table(done.values())


def _resume(journal: Journal, header: dict) -> dict[str, dict]:
    records = journal.read()
    if not records:
        journal.append(header)
        return {}
    if records[0] != header:
        raise checks.ArgumentError(f"{journal.path} was written with other settings ({records[0]}); pass the same "
                                   "settings to resume it, or another out= for new ones")
    done: dict[str, dict] = {}
    for r in records[1:]:
        if r.get("type") == "fact":
            done.setdefault(r["fact_id"], r)
    return done


def table(records):
    """The tidy table of fact records (see `effects`)."""
    import numpy as np
    import pandas as pd

    rows = []
    for r in records:
        for row in r["rows"]:
            b, sup, amp = (np.asarray(row[k], float) for k in ("before", "suppressed", "amplified"))
            rows.append({"fact_id": r["fact_id"], "relation": r["relation"],
                         **{k: row[k] for k in ("condition", "source", "measured", "target", "target_fact",
                                                "n_neurons")},
                         "p_before": b.mean(), "p_suppressed": sup.mean(), "p_amplified": amp.mean(),
                         "suppression": ratio_of_means(b, sup), "amplification": ratio_of_means(b, amp)})
    return pd.DataFrame(rows, columns=COLUMNS)


SUMMARY = ["condition", "source", "measured", "facts", "suppression_related", "suppression_unrelated",
           "amplification_related", "amplification_unrelated", "succ", "suppression_diff", "suppression_diff_low",
           "suppression_diff_high", "amplification_diff", "amplification_diff_low", "amplification_diff_high"]


def summary(t, *, seed: int = 0, level: float = 0.95):
    """A row per (condition, source, measured): the paper's relative changes (ratio of means over the
    facts' mean P), related and unrelated, its Succ = |sup_rel / sup_unrel| + |amp_rel / amp_unrel|,
    and the mean per-fact difference related - unrelated with a bootstrap interval over facts (Succ
    explodes when the unrelated change is near 0; the differences do not)."""
    import pandas as pd

    rows = []
    keys = ["condition", "source", "measured"]
    for key, g in t.groupby(keys, sort=False):
        rel = g[g.target == "related"].set_index("fact_id")
        unr = g[g.target == "unrelated"].set_index("fact_id")
        row = dict(zip(keys, key), facts=len(rel))
        for what, col in (("suppression", "p_suppressed"), ("amplification", "p_amplified")):
            row[f"{what}_related"] = ratio_of_means(rel.p_before, rel[col])
            row[f"{what}_unrelated"] = ratio_of_means(unr.p_before, unr[col]) if len(unr) else math.nan
            both = rel.index.intersection(unr.index)
            d = (rel.loc[both, what] - unr.loc[both, what]).to_numpy()
            m, lo, hi = bootstrap_mean(d, level=level, seed=seed)
            row |= {f"{what}_diff": m, f"{what}_diff_low": lo, f"{what}_diff_high": hi}
        row["succ"] = _succ(row)
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY)


def _succ(row: dict) -> float:
    try:
        return (abs(row["suppression_related"] / row["suppression_unrelated"])
                + abs(row["amplification_related"] / row["amplification_unrelated"]))
    except ZeroDivisionError:
        return math.inf
