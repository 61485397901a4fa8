"""How well do attribution methods localize knowledge? Runs of the same facts with different
settings (AMIG, zero-baseline IG, activation: Chen et al. 2024's comparison), side by side.

The paper's metric: per run, the relative change of P(gold) when the located neurons are suppressed
and amplified, on the fact (related) and on a fact of another relation (unrelated: the verify
phase's other-relation control), as ratios of means over facts, and Succ = |sup_rel / sup_unrel| +
|amp_rel / amp_unrel|. Ours beside it: the mean per-fact difference related - unrelated with a
bootstrap interval over facts (Succ divides by an unrelated change that may be near 0), and how
many knowledge neurons a fact gets.
"""
from __future__ import annotations

import math
from typing import Mapping

from .stats import bootstrap_mean, succ
from .verification import ratio_of_means

COLUMNS = ["method", "language", "facts", "neurons_per_fact", "suppression_related", "suppression_unrelated",
           "amplification_related", "amplification_unrelated", "succ", "suppression_diff", "suppression_diff_low",
           "suppression_diff_high", "amplification_diff", "amplification_diff_low", "amplification_diff_high"]


def _runs_by_language(res) -> dict:
    return dict(res.runs) if hasattr(res, "runs") else {res.settings.language: res}


def localization_quality(results: Mapping[str, object], *, seed: int = 0, level: float = 0.95):
    """A row per (method name, language) of `results` {name: RunResult or MultiRunResult}, over the
    facts verified with an unrelated control (the module docstring's metrics)."""
    import pandas as pd

    rows = []
    for name, res in results.items():
        for lang, r in _runs_by_language(res).items():
            f = r.facts
            f = f[f.suppression.notna() & f.control_other_suppression.notna()]
            row = {"method": name, "language": lang, "facts": len(f),
                   "neurons_per_fact": float(r.facts.n_neurons.dropna().astype(float).mean())
                   if r.facts.n_neurons.notna().any() else math.nan}
            for what, col in (("suppression", "p_suppressed"), ("amplification", "p_amplified")):
                row[f"{what}_related"] = ratio_of_means(f.p_before, f[col])
                row[f"{what}_unrelated"] = ratio_of_means(f.control_other_p_before, f[f"control_other_{col}"])
                m, lo, hi = bootstrap_mean((f[what] - f[f"control_other_{what}"]).to_numpy(), seed=seed, level=level)
                row |= {f"{what}_diff": m, f"{what}_diff_low": lo, f"{what}_diff_high": hi}
            row["succ"] = succ(row["suppression_related"], row["suppression_unrelated"],
                               row["amplification_related"], row["amplification_unrelated"])
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
