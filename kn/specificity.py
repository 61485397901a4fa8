"""Common knowledge neurons and specificity (issue "claims", Dai et al. 2022's common-neuron filter):
a neuron that is a knowledge neuron of many facts suppresses them all, so a fact's set that holds it
also suppresses unrelated control facts. Dai et al. drop, before editing, the neurons shared by more
than 10% of the relation's facts; here that filter is applied at several shares and in two scopes,
and the filtered sets are verified like the raw ones.

Scopes: "relation", the share of the relation's located facts a neuron is a knowledge neuron of (the
paper's); "run", the share of all the run's located facts, every relation's.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .neuron import Neuron

SCOPES = ("relation", "run")


@dataclass(frozen=True)
class Commonness:
    """How many located facts each neuron is a knowledge neuron of, per relation and in the run."""

    per_relation: Mapping[str, Counter]
    n_per_relation: Mapping[str, int]
    run: Counter
    n_run: int

    def share(self, neuron: Neuron, relation: str, scope: str) -> float:
        """The share of the scope's located facts that have `neuron` (0 for an empty scope)."""
        if scope == "relation":
            n = self.n_per_relation.get(relation, 0)
            return self.per_relation[relation][neuron] / n if n else 0.0
        return self.run[neuron] / self.n_run if self.n_run else 0.0


def commonness(neurons: Mapping[str, Sequence[Neuron]], relation_of: Mapping[str, str]) -> Commonness:
    """`neurons`: {fact id: its knowledge neurons} of every located fact (an empty set counts as a fact);
    `relation_of`: {fact id: its relation}."""
    per: dict[str, Counter] = {}
    n_per: Counter = Counter()
    run: Counter = Counter()
    for fid, kns in neurons.items():
        rel = relation_of[fid]
        per.setdefault(rel, Counter()).update(set(kns))
        n_per[rel] += 1
        run.update(set(kns))
    return Commonness(per, dict(n_per), run, len(neurons))


def filtered(neurons: Sequence[Neuron], relation: str, common: Commonness, scope: str, share: float) -> list[Neuron]:
    """The neurons a fact keeps when those in more than `share` of the scope's facts are dropped."""
    return [n for n in neurons if common.share(n, relation, scope) <= share]


def change(before: Sequence[float], after: Sequence[float]) -> float:
    """The relative change of the mean P(gold), mean(after) / mean(before) - 1 (NaN for nothing)."""
    b = float(np.mean(before)) if len(before) else float("nan")
    return float(np.mean(after)) / b - 1 if b > 0 else float("nan")


def summarize(table, *, within: float = 0.05, floor: float = 0.5):
    """Per condition of a `specificity` table (a row per fact and condition): facts, median neurons
    kept, the share of facts left with none, and the median per-fact change of the fact itself and of
    its other- and same-relation controls. `meets`: the other-relation control's median within
    `within` of zero while the fact's median suppression is at least `floor`."""
    import pandas as pd

    rows = []
    for (scope, share), g in table.groupby(["scope", "share"], sort=False, dropna=False):
        rows.append({"scope": scope, "share": share, "facts": len(g), "neurons": float(g.k.median()),
                     "emptied": float((g.k == 0).mean()), "fact": float(g.fact_change.median()),
                     "other": float(g.other_change.median()), "same": float(g.same_change.median())})
    out = pd.DataFrame(rows, columns=["scope", "share", "facts", "neurons", "emptied", "fact", "other", "same"])
    out["meets"] = (out.other.abs() <= within) & (out.fact <= -floor)
    return out


def best(summary):
    """The row of `summarize`'s output that meets the goal with the strongest fact suppression, or None."""
    ok = summary[summary.meets]
    return None if ok.empty else ok.sort_values("fact").iloc[0]


def label(scope: str, share: float) -> str:
    """A condition in words: "raw sets", "relation > 10% dropped"."""
    return "raw sets" if scope == "none" else f"{scope} > {share:.0%} dropped"


def readings(summary, *, within: float = 0.05, floor: float = 0.5) -> str:
    """`summarize`'s output in words: the raw sets, the best condition meeting the goal, or, when none
    does, the condition whose other-relation control comes closest to zero and what it costs."""
    raw = summary[summary.scope == "none"]
    lines = []
    if len(raw):
        r = raw.iloc[0]
        lines.append(f"Raw sets ({r.facts} facts, median {r.neurons:.0f} neurons): the fact {r.fact:+.0%}, "
                     f"another relation's fact {r.other:+.0%}, the same relation's {r.same:+.0%} (medians).")
    b = best(summary)
    filt = summary[summary.scope != "none"]
    if b is not None:
        lines.append(f"Goal met (other-relation control within {within:.0%} of zero, the fact's suppression at "
                     f"least {floor:.0%}) by {label(b.scope, b.share)}: median {b.neurons:.0f} neurons kept, "
                     f"{b.emptied:.0%} of facts left with none; the fact {b.fact:+.0%}, another relation's "
                     f"{b.other:+.0%}, the same relation's {b.same:+.0%}.")
    elif len(filt):
        c = filt.loc[filt.other.abs().idxmin()]
        lines.append(f"No condition meets the goal (other-relation control within {within:.0%} of zero while the "
                     f"fact's suppression stays at least {floor:.0%}). Closest control: {label(c.scope, c.share)}, "
                     f"another relation's fact {c.other:+.0%} with the fact itself at {c.fact:+.0%} "
                     f"({c.emptied:.0%} of facts left with no neuron).")
    return "\n\n".join(lines)
