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
relation, located in every language, picked per fact by a seeded RNG: `unrelated_fact`). `summary`
gives the paper's Succ and bootstrap intervals (`effects_table`, `reading`: its table and sentences).
`fact_edits` goes beyond the paper: the value-slot fact update made through the LIKN (and through one
language's own neurons), measured in every language (`edits_summary`: their means). The run phases
"crosslingual" and "crossedit" (`kn.runs.phases.crosslingual`) do both per fact of a run in several
languages, journaled with the run.
"""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Sequence

from . import checks
from .editing import LAMBDA1, LAMBDA2
from .likn import fact_likn
from .interventions import AMPLIFY_FACTOR, SUPPRESS_FACTOR
from .quality import styled
from .stats import bootstrap_mean, succ
from .verification import effect, ratio_of_means

log = logging.getLogger(__name__)

MAX_CONDITIONS = 1200  # neuron sets measured per fact (each on the fact and an unrelated one): 24 languages


def n_conditions(k: int) -> int:
    """Neuron sets `neuron_sets` measures at most for a fact with neurons in k languages: the LIKN in each
    (k), A's in B (k^2) and A's and B's together in A and in B (k(k - 1)): 2k^2, the square of k."""
    return 2 * k * k


def check_languages(k: int) -> None:
    """Refuse more languages than MAX_CONDITIONS allows, stating the cost."""
    if n_conditions(k) > MAX_CONDITIONS:
        most = max(j for j in range(1, k) if n_conditions(j) <= MAX_CONDITIONS)
        raise checks.ArgumentError(
            f"cross-lingual effects over {k} languages measure {n_conditions(k):,} neuron sets per fact (2k^2 "
            f"for k languages, each suppressed and amplified on the fact's and an unrelated fact's prompts); kn's "
            f"bound is {MAX_CONDITIONS:,} (kn.crosslingual.MAX_CONDITIONS): pass at most {most} languages")


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


def unrelated_fact(fact_id: str, located_everywhere: Sequence[str], relation_of, seed: int) -> str | None:
    """A seeded fact of another relation among those located in every language."""
    cands = [i for i in sorted(located_everywhere) if relation_of(i) != relation_of(fact_id)]
    return random.Random(f"{seed}|unrelated|{fact_id}").choice(cands) if cands else None


def fact_effects(lm, fact_id: str, per_language: dict[str, set], languages: Sequence[str], queries,
                 unrelated: str | None, s: CrossLingual) -> list[dict]:
    """The rows of one fact (conditions of `neuron_sets`, each on the fact and on `unrelated`):
    queries(language, fact_id) -> [(prompt, answer), ...]."""
    check_languages(len(languages))
    rows = []
    for cond, src, meas, neurons in neuron_sets(per_language, languages):
        for target, tf in (("related", fact_id), ("unrelated", unrelated)):
            if tf is None:
                continue
            qs = queries(meas, tf)
            e = effect(lm, [p for p, _ in qs], [a for _, a in qs], sorted(neurons), s.amplify_factor,
                       s.suppress_factor)
            rows.append({"condition": cond, "source": src, "measured": meas, "target": target, "target_fact": tf,
                         "n_neurons": len(neurons), "before": e.before.tolist(), "suppressed": e.suppressed.tolist(),
                         "amplified": e.amplified.tolist()})
    return rows


def table(records):
    """The tidy table of the "crosslingual" phase's records (`kn.runs.phases.crosslingual`)."""
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


KEYS = ["condition", "source", "measured"]


def effects_table(summ):
    """A `summary` indexed by (condition, source, measured) as a Styler: relative changes and their
    differences as signed percents, Succ with two decimals."""
    return styled(summ.set_index(KEYS), ["succ"])


def reading(summ, languages: Sequence[str]) -> str:
    """Markdown bullets of a `summary`: per ordered language pair (A, B), the suppression in B by B's
    own neurons against A's (related, then unrelated), and per language the LIKN's suppression and
    amplification over how many facts."""
    g = summ.set_index(KEYS)
    lines = []
    for a in languages:
        for b in languages:
            if a != b and ("mono", a, b) in g.index and ("mono", b, b) in g.index:
                own, cross = g.loc[("mono", b, b)], g.loc[("mono", a, b)]
                lines.append(f"- In **{b}**, suppressing {b}'s own neurons changes the fact by "
                             f"{own.suppression_related:+.1%}, {a}'s neurons by {cross.suppression_related:+.1%} "
                             f"(unrelated: {own.suppression_unrelated:+.1%} / {cross.suppression_unrelated:+.1%}).")
    for m in languages:
        if ("likn", "all", m) in g.index:
            r = g.loc[("likn", "all", m)]
            lines.append(f"- The LIKN alone, measured in **{m}**: {r.suppression_related:+.1%} suppressed, "
                         f"{r.amplification_related:+.1%} amplified, over {r.facts:.0f} facts.")
    return "\n".join(lines) or "No fact has neurons in two languages here."


# -- cross-lingual editing -----------------------------------------------------------------------
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


def new_fact(fact_id: str, objects: dict[str, list[str]], relation_of, seed: int) -> str | None:
    """A seeded fact of the same relation whose object differs from this fact's in every language
    (`objects`: {fact_id: its object per language}, over the facts located in every language)."""
    mine = objects[fact_id]
    cands = sorted(f for f, o in objects.items()
                   if relation_of(f) == relation_of(fact_id) and all(a != b for a, b in zip(o, mine)))
    return random.Random(f"{seed}|crossedit|{fact_id}").choice(cands) if cands else None


def fact_edits(lm, fact_id: str, per_language: dict[str, set], languages: Sequence[str], queries, new: str,
               s: CrossLingualEdit) -> list[dict]:
    """Cross-lingual fact updating (beyond the paper, which only scaled activations) of one fact with
    language-independent neurons: for each language A, the value-slot update old -> new
    (`kn.editing.update_fact`, A's words) made through the LIKN and, as the comparison, through A's
    own knowledge neurons, measured in every language. `new`: the fact whose object (in each
    language) is the new one; queries(language, fact_id) -> [(prompt, answer), ...]. A row per (A,
    neurons, measured language) with P(old) / rank and P(new) / rank per prompt, before and after;
    the model is restored bit-identically after each edit."""
    from .data.templates import object_of, with_object
    from .editing import update_fact
    from .probing import batch_stats

    likn_set = fact_likn(per_language)
    new_obj = {l: object_of(queries(l, new)[0][1]) for l in languages}

    def measure(lang: str) -> list:
        qs = list(queries(lang, fact_id))
        old = batch_stats(lm, qs)
        new = batch_stats(lm, [(p, with_object(a, new_obj[lang])) for p, a in qs])
        return [(*o, *n) for o, n in zip(old, new)]

    before = {l: measure(l) for l in languages}
    rows = []
    for a in languages:
        if not per_language.get(a):
            continue
        p0, a0 = queries(a, fact_id)[0]
        for kind, neurons in (("likn", likn_set), ("mono", per_language[a])):
            with update_fact(lm, sorted(neurons), p0, a0, with_object(a0, new_obj[a]), lambda1=s.lambda1,
                             lambda2=s.lambda2):
                after = {l: measure(l) for l in languages}
            for l in languages:
                rows.append({"edit_language": a, "neurons": kind, "n_neurons": len(neurons),
                             "old": object_of(queries(l, fact_id)[0][1]), "new": new_obj[l], "measured": l,
                             "new_fact": new, "before": before[l], "after": after[l]})
    return rows


def edit_table(records):
    """The tidy table of the "crossedit" phase's records (`kn.runs.phases.crosslingual`)."""
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


def edit_ratios(edits):
    """An `edit_table` with p_new_ratio and p_old_ratio: P(new) and P(old) after the edit / before."""
    return edits.assign(p_new_ratio=edits.p_new_after / edits.p_new_before,
                        p_old_ratio=edits.p_old_after / edits.p_old_before)


def edits_summary(edits):
    """Per (edit_language, neurons, measured) of an `edit_table`: the mean n_neurons, success, changed
    and P(old) / P(new) ratios (`edit_ratios`), rounded to 3 decimals."""
    return edit_ratios(edits).groupby(["edit_language", "neurons", "measured"])[
        ["n_neurons", "success", "changed", "p_old_ratio", "p_new_ratio"]].mean().round(3)
