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
relation, located in every language, picked per fact by a seeded RNG). `summary` gives the paper's
Succ and bootstrap intervals. `edits` goes beyond the paper: the value-slot fact update made through
the LIKN (and through one language's own neurons), measured in every language. Both journal one
record per fact (fsynced), so an interrupted call resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


from . import checks
from .likn import fact_likn
from .editing import LAMBDA1, LAMBDA2, update_fact
from .experiment import journaled, read_journal
from .interventions import AMPLIFY_FACTOR, SUPPRESS_FACTOR
from .stats import bootstrap_mean, succ
from .verification import effect, ratio_of_means

log = logging.getLogger(__name__)

JOURNAL = "crosslingual.jsonl"
COLUMNS = ["fact_id", "relation", "condition", "source", "measured", "target", "target_fact", "n_neurons",
           "p_before", "p_suppressed", "p_amplified", "suppression", "amplification"]


@dataclass(frozen=True)
class CrossLingual:
    """How the cross-lingual effects are measured: the two factors and the seed of the unrelated facts."""

    suppress_factor: float = SUPPRESS_FACTOR
    amplify_factor: float = AMPLIFY_FACTOR
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

    s = settings or CrossLingual()
    if not isinstance(s, CrossLingual):
        raise checks.ArgumentError(f"settings must be a kn.crosslingual.CrossLingual, got {type(s).__name__}")
    langs = res.languages
    per_fact = _per_fact(res)
    todo = [f for f, per in per_fact.items() if sum(bool(v) for v in per.values()) >= 2]
    unrelated = _Unrelated(res, s.seed)

    def work(fid: str) -> list[dict]:
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
        return rows

    header = {"type": "settings", **dataclasses.asdict(s), "languages": langs, "model": res.config["model"]["model"]}
    done = journaled(Path(out or res.out_dir) / JOURNAL, header, todo, res.relation_of(), work,
                     "cross-lingual", progress)
    return table(done)


def _per_fact(res) -> dict[str, dict[str, set]]:
    """{fact_id: {language: knowledge neurons}} over the run's facts and languages."""
    sets = res.sets()
    return {fid: {l: set(sets[l].get(fid, ())) for l in res.languages} for fid in res.facts.fact_id.unique()}


def load_effects(out_dir):
    """`effects`' table from its journal in `out_dir` (no model needed)."""
    return table(read_journal(Path(out_dir) / JOURNAL))


def load_edits(out_dir):
    """`edits`' table from its journal in `out_dir` (no model needed)."""
    return edit_table(read_journal(Path(out_dir) / EDIT_JOURNAL))


def table(records):
    """The tidy table of `effects`' fact records."""
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
        row["succ"] = succ(row["suppression_related"], row["suppression_unrelated"],
                           row["amplification_related"], row["amplification_unrelated"])
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY)


# -- cross-lingual editing -----------------------------------------------------------------------
EDIT_JOURNAL = "crosslingual_edits.jsonl"
EDIT_COLUMNS = ["fact_id", "relation", "edit_language", "neurons", "n_neurons", "old", "new", "measured",
                "n_prompts", "n_right", "success", "changed", "p_old_before", "p_old_after", "p_new_before",
                "p_new_after"]


@dataclass(frozen=True)
class CrossLingualEdit:
    """How the cross-lingual edits are made: the update's lambdas (`kn.editing.update_fact`) and the
    seed that picks each fact's new object."""

    lambda1: float = LAMBDA1
    lambda2: float = LAMBDA2
    seed: int = 0

    def __post_init__(self):
        checks.number(self.lambda1, "lambda1", low=0.0)
        checks.number(self.lambda2, "lambda2", low=0.0)
        checks.integer(self.seed, "seed")


def edits(lm, res, settings: CrossLingualEdit | None = None, *, out: str | Path | None = None,
          progress: bool = True):
    """Cross-lingual fact updating (beyond the paper, which only scaled activations): for each fact
    with language-independent neurons and each language A, the value-slot update old -> new
    (`kn.editing.update_fact`, A's words) made through the LIKN and, as the comparison, through A's
    own knowledge neurons, measured in every language. The new object is another fact's of the same
    relation (seeded per fact; its object in each language). A row per (fact, A, neurons, measured
    language): `success` / `changed` on the prompts whose old answer was top-1 before (as Dai et
    al.), and the mean P(old) and P(new) over all its prompts before and after. Journaled per fact;
    the model is restored bit-identically after each edit."""
    from .data.templates import with_object
    from .probing import answer_stats

    s = settings or CrossLingualEdit()
    if not isinstance(s, CrossLingualEdit):
        raise checks.ArgumentError(f"settings must be a kn.crosslingual.CrossLingualEdit, got {type(s).__name__}")
    langs = res.languages
    per_fact = _per_fact(res)
    likn = {f: fact_likn(per) for f, per in per_fact.items()}
    todo = [f for f in per_fact if likn[f]]
    located = set.intersection(*[set(r.located_facts()) for r in res.runs.values()])
    rel = res.relation_of()
    queries = {l: {f: res.runs[l].fact_queries(f) for f in located} for l in langs}

    def new_object(fid: str) -> str | None:
        objs = {f: [queries[l][f][0][1].strip() for l in langs] for f in located if rel[f] == rel[fid]}
        mine = objs[fid]
        cands = sorted(f for f, o in objs.items() if all(a != b for a, b in zip(o, mine)))
        return random.Random(f"{s.seed}|crossedit|{fid}").choice(cands) if cands else None

    def measure(fid: str, lang: str, new: str) -> list[tuple[float, int, float, int]]:
        return [(*answer_stats(lm, p, a), *answer_stats(lm, p, with_object(a, new))) for p, a in queries[lang][fid]]

    def work(fid: str) -> list[dict]:
        u = new_object(fid)
        if u is None:
            return []
        new = {l: queries[l][u][0][1].strip() for l in langs}
        before = {l: measure(fid, l, new[l]) for l in langs}
        rows = []
        for a in langs:
            if not per_fact[fid][a]:
                continue
            p0, a0 = queries[a][fid][0]
            for kind, neurons in (("likn", likn[fid]), ("mono", per_fact[fid][a])):
                with update_fact(lm, sorted(neurons), p0, a0, with_object(a0, new[a]), lambda1=s.lambda1,
                                 lambda2=s.lambda2):
                    after = {l: measure(fid, l, new[l]) for l in langs}
                for l in langs:
                    rows.append({"edit_language": a, "neurons": kind, "n_neurons": len(neurons),
                                 "old": queries[l][fid][0][1].strip(), "new": new[l], "measured": l, "new_fact": u,
                                 "before": before[l], "after": after[l]})
        return rows

    header = {"type": "settings", **dataclasses.asdict(s), "languages": langs, "model": res.config["model"]["model"]}
    done = journaled(Path(out or res.out_dir) / EDIT_JOURNAL, header, todo, rel, work, "cross-lingual edits",
                     progress)
    return edit_table(done)


def edit_table(records):
    """The tidy table of `edits`' fact records."""
    import numpy as np
    import pandas as pd

    rows = []
    for r in records:
        for row in r["rows"]:
            b, a = np.asarray(row["before"], float), np.asarray(row["after"], float)
            right = b[:, 1] == 0  # the old answer was top-1 before the edit
            n = int(right.sum())
            rows.append({"fact_id": r["fact_id"], "relation": r["relation"],
                         **{k: row[k] for k in ("edit_language", "neurons", "n_neurons", "old", "new", "measured")},
                         "n_prompts": len(b), "n_right": n,
                         "success": float((a[right, 3] == 0).mean()) if n else math.nan,
                         "changed": float((a[right, 1] != 0).mean()) if n else math.nan,
                         "p_old_before": b[:, 0].mean(), "p_old_after": a[:, 0].mean(),
                         "p_new_before": b[:, 2].mean(), "p_new_after": a[:, 2].mean()})
    return pd.DataFrame(rows, columns=EDIT_COLUMNS)
