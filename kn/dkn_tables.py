"""Tables of degenerate knowledge neurons (Chen et al. 2024) read from a run's or a recording's
tables: facts (n_neurons, dkn_pairs, dkn_neurons per fact), pair_effects (per prompt and pair: p0 and
P with neuron a, b or both off). Pure pandas; the search itself is `kn.degenerate`."""
from __future__ import annotations

import numpy as np
import pandas as pd


def relative_effects(effects) -> pd.DataFrame:
    """A row per (prompt, pair) measurement: P / P0 with one neuron of the pair off (a), the other (b),
    and both."""
    return pd.DataFrame({"one off (a)": effects.a_off / effects.p0, "one off (b)": effects.b_off / effects.p0,
                         "both off": effects.both_off / effects.p0}).astype(float)


def by_relation(facts) -> pd.DataFrame:
    """Per relation over its located facts (n_neurons set): how many, those with pairs, the mean pairs,
    DKN neurons and knowledge neurons per fact."""
    f = facts[facts.n_neurons.notna()]
    return f.groupby("relation").agg(facts=("fact_id", "size"), with_pairs=("dkn_pairs", lambda s: int((s > 0).sum())),
                                     pairs_per_fact=("dkn_pairs", "mean"), dkn_neurons_per_fact=("dkn_neurons", "mean"),
                                     kns_per_fact=("n_neurons", "mean"))


def recorded_summary(recordings) -> pd.DataFrame:
    """A row per {run: recording with facts and pair_effects}: facts located, with pairs, pairs, DKN
    neurons and knowledge neurons per fact, and the mean P / P0 with one neuron of a pair off and with
    both (NaN without measurements), rounded to 3 decimals."""
    rows = []
    for m, r in recordings.items():
        f, e = r["facts"], r["pair_effects"]
        rows.append({"run": m, "facts located": int(f.n_neurons.notna().sum()),
                     "with pairs": int((f.dkn_pairs > 0).sum()), "pairs per fact": f.dkn_pairs.mean(),
                     "DKN neurons per fact": f.dkn_neurons.mean(), "KNs per fact": f.n_neurons.mean(),
                     "P, one off / P0": np.r_[e.a_off / e.p0, e.b_off / e.p0].mean() if len(e) else np.nan,
                     "P, both off / P0": (e.both_off / e.p0).mean() if len(e) else np.nan})
    return pd.DataFrame(rows).set_index("run").round(3)
