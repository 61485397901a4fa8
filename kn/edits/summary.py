"""An edit study's tables summarised per method (the `edit` phase's `edits`, `edit_batches`,
`edit_crosslingual` and `edit_failures`), and issue 30's goal for kn-opt read against them. A table with the column
``neurons_from`` (the neuron set a neuron method edited through, `kn.edits.NEURON_SETS`; empty for ft and
rome) is summarised per (method, neurons_from), the sets in that order within a method."""
from __future__ import annotations

import math

from ..stats import bootstrap_mean
from .base import NEURON_SETS

METRICS = ("reliability", "generalization", "locality", "locality_kl", "portability", "synonymy", "fluency")
# the goal for kn-opt: single edits, and batches of GOAL_BATCH edits at once
GOAL = {"single": {"reliability": 0.95, "generalization": 0.70, "locality": 0.90},
        "batch": {"reliability": 0.80, "locality": 0.85}}
GOAL_BATCH = 100


def _keys(table, *more: str) -> list[str]:
    """What a summary groups by: method, neurons_from where the table has it, then `more`."""
    return ["method", *(["neurons_from"] if "neurons_from" in table else []), *more]


def _groups(table, keys: list[str]):
    """(the group's key columns as a dict, its rows) per group of `keys`, in order of appearance (an
    empty neurons_from, ft's and rome's, is a group too)."""
    for key, g in table.groupby(keys, sort=False, dropna=False):
        yield dict(zip(keys, key)), g


def _ordered(out, order):
    """`out` with the methods of `order` only, in that order (stable), each method's neuron sets in
    `NEURON_SETS` order; as it is for no order."""
    if order is None or not len(out):
        return out
    rank = {m: i for i, m in enumerate(order)}
    out = out[out.method.isin(rank)]
    sets = out.neurons_from.map({s: i for i, s in enumerate(NEURON_SETS)}).fillna(-1) if "neurons_from" in out else 0
    return out.assign(_rank=out.method.map(rank) * (len(NEURON_SETS) + 1) + sets).sort_values(
        "_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)


def by_method(edits, order=None):
    """A row per method (per method and neurons_from where the table has it): edits, each metric's mean
    with its 95% bootstrap interval (low, high; over edits, NaN rows left out), neurons and parameters
    touched, seconds per edit (the median: a method's one-time work, such as rome's key covariance, lands in
    the first edit's)."""
    import pandas as pd

    rows = []
    for key, g in _groups(edits, _keys(edits)):
        row = {**key, "edits": len(g)}
        for k in METRICS:
            x = g[k].dropna().to_numpy(dtype=float) if k in g else []
            mean, low, high = bootstrap_mean(x) if len(x) else (math.nan,) * 3
            row |= {k: mean, f"{k}_low": low, f"{k}_high": high}
        row |= {"n_neurons": float(g.n_neurons.mean()), "n_params": float(g.n_params.mean()),
                "edit_seconds": float(g.edit_seconds.median())}
        rows.append(row)
    return _ordered(pd.DataFrame(rows), order)


def by_batch(edit_batches, order=None) -> dict:
    """{batch size: `by_method` of the edits made in batches of that size} (the `edit_batches` table)."""
    return {int(n): by_method(g, order) for n, g in edit_batches.groupby("batch")}


def panels(single, batches: dict) -> tuple[dict, dict]:
    """({title: summary}, {title: the goal's bounds}) of single edits (`by_method`, left out when empty) and
    `by_batch`'s batch sizes: what `kn.figures.edit_methods_figure` draws, each batch size's goal where
    `GOAL` has one (batches of GOAL_BATCH)."""
    shown, goals = {}, {}
    if len(single):
        title = f"single edits ({int(single.edits.max())})"
        shown[title], goals[title] = single, GOAL["single"]
    for n, b in batches.items():
        title = f"batches of {n} ({int(b.edits.max())} edits)"
        shown[title], goals[title] = b, GOAL["batch"] if n == GOAL_BATCH else {}
    return shown, goals


def crosslingual(edit_crosslingual, order=None):
    """A row per (method, measured language) of the `edit_crosslingual` table (single edits asked in
    another language of the run; edits made in any other language pooled), per (method, neurons_from,
    measured) where the table has neurons_from: edits, the cross-lingual reliability's mean with its 95%
    bootstrap interval (low, high), and the means of reliability_before, old_known and old_kept. Empty
    for a one-language run."""
    import pandas as pd

    keys = _keys(edit_crosslingual, "measured")
    means = ["reliability_before", "old_known", "old_kept"]
    rows = []
    for key, g in _groups(edit_crosslingual, keys):
        mean, low, high = bootstrap_mean(g.reliability.to_numpy(dtype=float))
        rows.append({**key, "edits": len(g), "reliability": mean, "reliability_low": low, "reliability_high": high,
                     **{k: float(g[k].mean()) for k in means}})
    cols = [*keys, "edits", "reliability", "reliability_low", "reliability_high", *means]
    return _ordered(pd.DataFrame(rows, columns=cols), order)


def failures(edit_failures, order=None):
    """A row per (method, neurons_from, batch size, error) of the `edit_failures` table (edits a method
    could not make or measure, so no row of theirs is in the other tables): how many (single edits, or
    batches), the facts they held, and the first message."""
    import pandas as pd

    rows = []
    for key, g in _groups(edit_failures, _keys(edit_failures, "batch", "error")):
        facts = len(g) if key["batch"] == 1 else int(g.batch.sum())
        rows.append({**key, "failed": len(g), "facts": facts, "message": g.message.iloc[0]})
    cols = [*_keys(edit_failures, "batch", "error"), "failed", "facts", "message"]
    return _ordered(pd.DataFrame(rows, columns=cols), order)


def goal(summary, kind: str = "single", method: str = "kn-opt") -> tuple[bool | None, str]:
    """(met, words): whether `method`'s means in `summary` (`by_method`; its own neurons' row where it
    has neuron sets) reach `GOAL[kind]` (a metric not measured does not); None when the method was not
    measured."""
    row = summary[(summary.method == method) & (summary.neurons_from == "own" if "neurons_from" in summary else True)]
    if row.empty:
        return None, f"{method} was not measured ({kind} edits)"
    r = row.iloc[0]
    parts, met = [], True
    for k, target in GOAL[kind].items():
        ok = r[k] >= target  # an unmeasured metric (NaN, e.g. no held paraphrase) does not meet it
        met &= bool(ok)
        parts.append(f"{k} not measured" if math.isnan(r[k]) else f"{k} {r[k]:.0%} ({'>=' if ok else '<'} {target:.0%})")
    return met, f"{method}, {kind} edits ({int(r.edits)}): " + ", ".join(parts)
