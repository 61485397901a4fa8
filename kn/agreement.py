"""Agreement of cheaper attribution settings with the paper's (issue 31): runs over the same facts,
one per setting, compared fact by fact with a reference run (IG, riemann_left, 20 steps, all layers).

Per fact: the Jaccard of its knowledge-neuron set with the reference's, the recall of the reference's
neurons, and both runs' suppression and amplification. Per setting: the median Jaccard and recall
over every fact with reference neurons that the candidate located (one where it found none counts at 0),
the mean effects beside the reference's on the facts where both have them, the seconds per fact (the locate phase's),
and whether it agrees (median Jaccard >= `JACCARD`, both mean effects within `EFFECT` of the
reference's, relatively). The fast default is the cheapest float32 setting that agrees.
"""
from __future__ import annotations

import math
from typing import Mapping

JACCARD = 0.9  # the median Jaccard a setting must reach
EFFECT = 0.10  # ... and its mean effects' largest relative distance from the reference's


def _tables(run):
    """(facts, neurons) of a RunResult or a Recording."""
    if hasattr(run, "facts") and hasattr(run, "neurons"):
        return run.facts, run.neurons
    return run["facts"], run["neurons"]


def _sets(neurons) -> dict[str, set]:
    return {f: set(zip(g.layer.astype(int), g["index"].astype(int))) for f, g in neurons.groupby("fact_id")}


def _dtype(run) -> str:
    """The weights' dtype a run was made with ("float32", "bfloat16"), from its config (a RunResult's, or
    a Recording's provenance); float32 when it says none."""
    config = getattr(run, "config", None) or (getattr(run, "provenance", None) or {}).get("run_config") or {}
    return str(config.get("model", {}).get("dtype", "float32")).removeprefix("torch.")


def per_fact(reference, candidate):
    """A row per fact located with neurons in the reference and located in the candidate: sizes,
    jaccard, recall (of the reference's neurons), and each run's suppression and amplification."""
    import pandas as pd

    (rf, rn), (cf, cn) = _tables(reference), _tables(candidate)
    rs, cs = _sets(rn), _sets(cn)
    rf, cf = rf.set_index("fact_id"), cf.set_index("fact_id")
    rows = []
    for fid, a in rs.items():
        if fid not in cf.index or pd.isna(cf.loc[fid, "n_neurons"]):  # not located in the candidate
            continue
        b = cs.get(fid, set())
        rows.append({"fact_id": fid, "relation": rf.loc[fid, "relation"], "n_reference": len(a), "n": len(b),
                     "jaccard": len(a & b) / len(a | b), "recall": len(a & b) / len(a),
                     "suppression_reference": rf.loc[fid, "suppression"], "suppression": cf.loc[fid, "suppression"],
                     "amplification_reference": rf.loc[fid, "amplification"],
                     "amplification": cf.loc[fid, "amplification"]})
    return pd.DataFrame(rows, columns=["fact_id", "relation", "n_reference", "n", "jaccard", "recall",
                                       "suppression_reference", "suppression", "amplification_reference",
                                       "amplification"])


def _relative(x: float, ref: float) -> float:
    return abs(x - ref) / abs(ref) if ref else math.inf


def summary(reference, candidates: Mapping[str, object]):
    """A row per setting of `candidates` {name: run} (the reference may be among them): facts compared
    (and of them, with both runs' effects), median / mean Jaccard, median recall, mean effects and the reference's on the same facts, their
    relative distances, seconds per fact and the speed-up over the reference, and `agrees`."""
    import pandas as pd

    ref_seconds = float(_tables(reference)[0].seconds.mean())
    rows = []
    for name, run in candidates.items():
        every = per_fact(reference, run)  # a fact the candidate finds no neuron for counts, at Jaccard 0
        d = every.dropna(subset=["suppression", "amplification", "suppression_reference", "amplification_reference"])
        sec = float(_tables(run)[0].seconds.mean())
        row = {"setting": name, "dtype": _dtype(run), "facts": len(every), "facts_with_effects": len(d),
               "jaccard_median": every.jaccard.median(), "jaccard_mean": every.jaccard.mean(),
               "recall_median": every.recall.median(), "suppression": d.suppression.mean(),
               "suppression_reference": d.suppression_reference.mean(), "amplification": d.amplification.mean(),
               "amplification_reference": d.amplification_reference.mean(), "seconds_per_fact": sec,
               "speedup": ref_seconds / sec if sec else math.nan}
        row["effect_distance"] = max(_relative(row["suppression"], row["suppression_reference"]),
                                     _relative(row["amplification"], row["amplification_reference"])) if len(d) else math.nan
        row["agrees"] = bool(len(d) and row["jaccard_median"] >= JACCARD and row["effect_distance"] <= EFFECT)
        rows.append(row)
    return pd.DataFrame(rows)


def fast_default(table, dtype: str = "float32"):
    """The cheapest setting of a `summary` table that agrees (its row), among those with `dtype` weights
    (None: any), or None."""
    ok = table[table.agrees & ((table["dtype"] == dtype) if dtype and "dtype" in table else True)]
    return None if ok.empty else ok.sort_values("seconds_per_fact").iloc[0]


def layer_shares(runs: Mapping[str, object], n_layers: int):
    """A DataFrame [setting x layer 0..n_layers-1]: the share of each run's knowledge neurons in each
    layer (`kn.layer_map.layer_shares`), so that a setting's missed neurons show where they were."""
    import pandas as pd

    from .layer_map import layer_shares as shares

    return pd.DataFrame({name: shares(_tables(run)[1], n_layers) for name, run in runs.items()}).T


def readings(table, model: str) -> str:
    """What a `summary` table says, in sentences: which cheaper settings agree and the fast default (the
    cheapest float32 one: its speed-up, Jaccard and effects' distance), a cheaper one with other weights
    that agrees too, and the closest of those that do not agree."""
    cheaper = table[table.setting != "paper"]
    if cheaper.empty:
        return f"On {model}, only the paper's setting is recorded so far."
    ok, off = cheaper[cheaper.agrees], cheaper[~cheaper.agrees]
    parts = [f"On {model}, {len(ok)} of {len(cheaper)} cheaper settings agree with the paper's"]
    pick = fast_default(table)
    if pick is not None and pick.setting != "paper":
        parts[0] += (f"; the cheapest with float32 weights, `{pick.setting}`, is the fast default: {pick.speedup:.1f}x the paper "
                     f"setting's speed, median Jaccard {pick.jaccard_median:.2f} (mean {pick.jaccard_mean:.2f}), "
                     f"mean effects {pick.effect_distance:.0%} off.")
    else:
        parts[0] += "; the paper's setting stays the default."
    cheapest = fast_default(table, dtype=None)
    if cheapest is not None and (pick is None or cheapest.setting != pick.setting):
        parts.append(f"With {cheapest['dtype']} weights (`--dtype`), `{cheapest.setting}` agrees too, at "
                     f"{cheapest.speedup:.1f}x (median Jaccard {cheapest.jaccard_median:.2f}, effects "
                     f"{cheapest.effect_distance:.0%} off).")
    if len(off):
        best = off.sort_values("jaccard_median", ascending=False).iloc[0]
        parts.append(f"Of the {len(off)} that do not, the closest is `{best.setting}` ({best.speedup:.1f}x): median "
                     f"Jaccard {best.jaccard_median:.2f}, recall of the paper's neurons {best.recall_median:.2f}, "
                     f"mean effects {best.effect_distance:.0%} off.")
    return " ".join(parts)
