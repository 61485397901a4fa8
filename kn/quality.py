"""How well do attribution methods localize knowledge? Runs of the same facts with different
settings (AMIG, zero-baseline IG, activation: Chen et al. 2024's comparison), side by side.

The paper's metric: per run, the relative change of P(gold) when the located neurons are suppressed
and amplified, on the fact (related) and on a fact of another relation (unrelated: the verify
phase's other-relation control), as ratios of means over facts, and Succ = |sup_rel / sup_unrel| +
|amp_rel / amp_unrel|. Ours beside it: the mean per-fact difference related - unrelated with a
bootstrap interval over facts (Succ divides by an unrelated change that may be near 0), and how
many knowledge neurons a fact gets. `styled` formats such tables; `against_claim` and
`facts_against_agreement` read them in sentences.
"""
from __future__ import annotations

import math
from typing import Mapping

from .stats import bootstrap_mean, succ
from .verification import ratio_of_means

COLUMNS = ["method", "language", "facts", "neurons_per_fact", "suppression_related", "suppression_unrelated",
           "amplification_related", "amplification_unrelated", "succ", "suppression_diff", "suppression_diff_low",
           "suppression_diff_high", "amplification_diff", "amplification_diff_low", "amplification_diff_high"]


def _facts_by_language(res) -> dict:
    """{language: facts table} of a RunResult / MultiRunResult or of a facts table with a language column."""
    if hasattr(res, "runs"):
        return {lang: r.facts for lang, r in res.runs.items()}
    if hasattr(res, "facts"):
        return {res.settings.language: res.facts}
    return {lang: g for lang, g in res.groupby("language", sort=False)}


def method_label(attribution: Mapping) -> str:
    """A run's method as the comparison names it, from its config's attribution settings."""
    if attribution.get("kind") == "activation":
        return "activation"
    return "AMIG" if attribution.get("baseline") == "amig" else f"IG ({attribution.get('baseline', 'zero')})"


def localization_quality(results: Mapping[str, object], *, seed: int = 0, level: float = 0.95):
    """A row per (method name, language) of `results` {name: RunResult, MultiRunResult, or a run's facts
    table (a recording's)}, over the facts verified with an unrelated control (the module docstring's
    metrics)."""
    import pandas as pd

    rows = []
    for name, res in results.items():
        for lang, facts in _facts_by_language(res).items():
            f = facts[facts.suppression.notna() & facts.control_other_suppression.notna()]
            row = {"method": name, "language": lang, "facts": len(f),
                   "neurons_per_fact": float(facts.n_neurons.dropna().astype(float).mean())
                   if facts.n_neurons.notna().any() else math.nan}
            for what, col in (("suppression", "p_suppressed"), ("amplification", "p_amplified")):
                row[f"{what}_related"] = ratio_of_means(f.p_before, f[col])
                row[f"{what}_unrelated"] = ratio_of_means(f.control_other_p_before, f[f"control_other_{col}"])
                m, lo, hi = bootstrap_mean((f[what] - f[f"control_other_{what}"]).to_numpy(), seed=seed, level=level)
                row |= {f"{what}_diff": m, f"{what}_diff_low": lo, f"{what}_diff_high": hi}
            row["succ"] = succ(row["suppression_related"], row["suppression_unrelated"],
                               row["amplification_related"], row["amplification_unrelated"])
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def compare(quality, method: str = "AMIG", against: str = "IG (zero)"):
    """Per language of a `localization_quality` table: `method` against `against` (Chen et al.'s claim:
    AMIG localizes better than zero-baseline IG): each one's Succ, suppression difference related -
    unrelated with its interval, neurons per fact and facts, whether `method`'s Succ is higher, and
    whether the two suppression intervals overlap."""
    import pandas as pd

    g = quality.set_index(["method", "language"])
    rows = []
    for lang in dict.fromkeys(quality.language):
        if (method, lang) not in g.index or (against, lang) not in g.index:
            continue
        a, z = g.loc[(method, lang)], g.loc[(against, lang)]
        row = {"language": lang}
        for tag, r in (("", a), ("_against", z)):
            row |= {f"succ{tag}": r.succ, f"suppression_diff{tag}": r.suppression_diff,
                    f"suppression_diff_low{tag}": r.suppression_diff_low,
                    f"suppression_diff_high{tag}": r.suppression_diff_high,
                    f"neurons_per_fact{tag}": r.neurons_per_fact, f"facts{tag}": r.facts}
        row["higher_succ"] = bool(a.succ > z.succ)
        row["intervals_overlap"] = bool(a.suppression_diff_low <= z.suppression_diff_high
                                        and z.suppression_diff_low <= a.suppression_diff_high)
        rows.append(row)
    return pd.DataFrame(rows)


def set_overlap(a: Mapping[str, Mapping[str, list]], b: Mapping[str, Mapping[str, list]]) -> dict[str, float]:
    """{language: mean Jaccard overlap of a fact's knowledge neurons under two runs} over the facts with
    neurons under both; `a`, `b`: {language: {fact_id: neurons}} (`RunResult.sets`). NaN for none."""
    out = {}
    for lang, sa in a.items():
        sb = b.get(lang, {})
        v = [len(set(sa[f]) & set(sb[f])) / len(set(sa[f]) | set(sb[f])) for f in sa if sa[f] and sb.get(f)]
        out[lang] = sum(v) / len(v) if v else math.nan
    return out


def styled(t, two_decimals=("succ",)):
    """A table of these metrics (`localization_quality`, `kn.crosslingual.summary`; indexed as it is to
    be shown) as a pandas Styler: the relative changes (columns starting with suppression or
    amplification) as signed percents, the `two_decimals` columns with two decimals, NaN as "-"."""
    pct = [c for c in t.columns if c.startswith(("suppression", "amplification"))]
    return t.style.format("{:+.1%}", subset=pct, na_rep="-").format("{:.2f}", subset=list(two_decimals), na_rep="-")


def against_claim(name: str, quality, method: str = "AMIG", against: str = "IG (zero)") -> str:
    """Markdown: Chen et al.'s claim (AMIG localizes better than zero-baseline IG) read on a
    `localization_quality` table named `name`: in how many languages `method`'s Succ is higher, then
    per language (`compare`) both Succs, suppression differences with intervals, neurons per fact and
    facts verified."""
    c = compare(quality, method, against)
    higher = list(c.language[c.higher_succ]) if len(c) else []
    lines = [f"**{name}**: {method}'s Succ is higher than zero-baseline IG's in {len(higher)} of {len(c)} languages"
             f" ({', '.join(higher) or 'none'})."]
    for r in c.itertuples():
        lines.append(f"- {r.language}: Succ {r.succ:.2f} vs {r.succ_against:.2f}; suppression related - unrelated "
                     f"{r.suppression_diff:+.1%} [{r.suppression_diff_low:+.1%}, {r.suppression_diff_high:+.1%}] vs "
                     f"{r.suppression_diff_against:+.1%} [{r.suppression_diff_low_against:+.1%}, "
                     f"{r.suppression_diff_high_against:+.1%}]"
                     f"{' (the intervals overlap)' if r.intervals_overlap else ''}; {r.neurons_per_fact:.1f} vs "
                     f"{r.neurons_per_fact_against:.1f} neurons per fact, {r.facts:.0f} vs {r.facts_against:.0f} facts verified.")
    return "\n".join(lines)


def facts_against_agreement(quality, languages) -> str:
    """Markdown bullets, per language with both rows of a `localization_quality` table of the methods
    "facts" and "agreement" (Niu et al.'s critique: the same test on facts and on grammar): the
    suppression of each set's items and of the other relation's, neurons per item and items."""
    g = quality.set_index(["method", "language"])
    lines = []
    for lang in languages:
        if ("facts", lang) not in g.index or ("agreement", lang) not in g.index:
            continue
        f, a = g.loc[("facts", lang)], g.loc[("agreement", lang)]
        lines.append(f"- **{lang}**: suppressing the located neurons changes a fact by {f.suppression_related:+.1%} "
                     f"and an agreement by {a.suppression_related:+.1%} (the other relation's item: "
                     f"{f.suppression_unrelated:+.1%} / {a.suppression_unrelated:+.1%}); {f.neurons_per_fact:.1f} vs "
                     f"{a.neurons_per_fact:.1f} neurons per item, over {f.facts:.0f} and {a.facts:.0f} items.")
    return "\n".join(lines) or "Nothing was located in both sets on this slice."
