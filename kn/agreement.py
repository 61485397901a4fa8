"""Agreement of cheaper attribution settings with the paper's (issue 31): runs over the same facts,
one per setting, compared fact by fact with a reference run (IG, riemann_left, 20 steps, all layers).

Per fact: the Jaccard of its knowledge-neuron set with the reference's, the recall of the reference's
neurons, and both runs' suppression and amplification. Per setting: the median Jaccard and recall,
the mean effects beside the reference's on the same facts, the seconds per fact (the locate phase's),
and whether it agrees (median Jaccard >= `JACCARD`, both mean effects within `EFFECT` of the
reference's, relatively). The fast default is the cheapest setting that agrees.
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
    """A row per setting of `candidates` {name: run} (the reference may be among them): facts compared,
    median / mean Jaccard, median recall, mean effects and the reference's on the same facts, their
    relative distances, seconds per fact and the speed-up over the reference, and `agrees`."""
    import pandas as pd

    ref_seconds = float(_tables(reference)[0].seconds.mean())
    rows = []
    for name, run in candidates.items():
        d = per_fact(reference, run).dropna(subset=["suppression", "amplification", "suppression_reference",
                                                     "amplification_reference"])
        sec = float(_tables(run)[0].seconds.mean())
        row = {"setting": name, "facts": len(d), "jaccard_median": d.jaccard.median(), "jaccard_mean": d.jaccard.mean(),
               "recall_median": d.recall.median(), "suppression": d.suppression.mean(),
               "suppression_reference": d.suppression_reference.mean(), "amplification": d.amplification.mean(),
               "amplification_reference": d.amplification_reference.mean(), "seconds_per_fact": sec,
               "speedup": ref_seconds / sec if sec else math.nan}
        row["effect_distance"] = max(_relative(row["suppression"], row["suppression_reference"]),
                                     _relative(row["amplification"], row["amplification_reference"])) if len(d) else math.nan
        row["agrees"] = bool(len(d) and row["jaccard_median"] >= JACCARD and row["effect_distance"] <= EFFECT)
        rows.append(row)
    return pd.DataFrame(rows)


def fast_default(table):
    """The cheapest setting of a `summary` table that agrees (its row), or None."""
    ok = table[table.agrees]
    return None if ok.empty else ok.sort_values("seconds_per_fact").iloc[0]
