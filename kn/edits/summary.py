"""An edit study's tables summarised per method (the `edit` phase's `edits`, `edit_batches` and
`edit_crosslingual`), and issue 30's goal for kn-opt read against them."""
from __future__ import annotations

import math

from ..stats import bootstrap_mean

METRICS = ("reliability", "generalization", "locality", "locality_kl", "portability", "synonymy", "fluency")
# the goal for kn-opt: single edits, and batches of GOAL_BATCH edits at once
GOAL = {"single": {"reliability": 0.95, "generalization": 0.70, "locality": 0.90},
        "batch": {"reliability": 0.80, "locality": 0.85}}
GOAL_BATCH = 100


def by_method(edits, order=None):
    """A row per method: edits, each metric's mean with its 95% bootstrap interval (low, high; over
    edits, NaN rows left out), neurons and parameters touched, seconds per edit."""
    import pandas as pd

    rows = []
    for m, g in edits.groupby("method", sort=False):
        row = {"method": m, "edits": len(g)}
        for k in METRICS:
            x = g[k].dropna().to_numpy(dtype=float) if k in g else []
            mean, low, high = bootstrap_mean(x) if len(x) else (math.nan,) * 3
            row |= {k: mean, f"{k}_low": low, f"{k}_high": high}
        row |= {"n_neurons": float(g.n_neurons.mean()), "n_params": float(g.n_params.mean()),
                "edit_seconds": float(g.edit_seconds.mean())}
        rows.append(row)
    out = pd.DataFrame(rows)
    if order is not None and len(out):
        out = out.set_index("method").reindex([m for m in order if m in set(out.method)]).reset_index()
    return out


def by_batch(edit_batches, order=None) -> dict:
    """{batch size: `by_method` of the edits made in batches of that size} (the `edit_batches` table)."""
    return {int(n): by_method(g, order) for n, g in edit_batches.groupby("batch")}


def crosslingual(edit_crosslingual, order=None):
    """A row per (method, measured language) of the `edit_crosslingual` table (single edits asked in
    another language of the run; edits made in any other language pooled): edits, the cross-lingual reliability's mean with its 95% bootstrap
    interval (low, high), and the means of reliability_before, old_known and old_kept. Empty for a
    one-language run."""
    import pandas as pd

    cols = ["method", "measured", "edits", "reliability", "reliability_low", "reliability_high",
            "reliability_before", "old_known", "old_kept"]
    rows = []
    for (m, lang), g in edit_crosslingual.groupby(["method", "measured"], sort=False):
        mean, low, high = bootstrap_mean(g.reliability.to_numpy(dtype=float))
        rows.append({"method": m, "measured": lang, "edits": len(g), "reliability": mean, "reliability_low": low,
                     "reliability_high": high, **{k: float(g[k].mean()) for k in cols[6:]}})
    out = pd.DataFrame(rows, columns=cols)
    if order is not None and len(out):
        rank = {m: i for i, m in enumerate(order)}
        out = out[out.method.isin(rank)].sort_values("method", key=lambda m: m.map(rank), kind="stable")
        out = out.reset_index(drop=True)
    return out


def goal(summary, kind: str = "single", method: str = "kn-opt") -> tuple[bool | None, str]:
    """(met, words): whether `method`'s means in `summary` (`by_method`) reach `GOAL[kind]`; None when
    it was not measured."""
    row = summary[summary.method == method]
    if row.empty:
        return None, f"{method} was not measured ({kind} edits)"
    r = row.iloc[0]
    parts, met = [], True
    for k, target in GOAL[kind].items():
        ok = r[k] >= target
        met &= bool(ok)
        parts.append(f"{k} {r[k]:.0%} ({'>=' if ok else '<'} {target:.0%})")
    return met, f"{method}, {kind} edits ({int(r.edits)}): " + ", ".join(parts)
