"""kn.editing_tables on hand-built update and erasure tables."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from kn import editing_tables as T


def _updates(collateral=True):
    u = pd.DataFrame({"relation": ["r1", "r1", "r2"], "success": [1.0, 0.0, 0.5], "changed": [1.0, 1.0, 0.0],
                      "random_success": [0.0, 0.0, 0.0], "random_changed": [0.5, 0.0, 0.0],
                      "intra_ppl_before": [2.0, 4.0, 100.0], "intra_ppl_after": [3.0, 9.0, 1e6],
                      "inter_ppl_before": [1.0, 1.0, 1.0], "inter_ppl_after": [1.0, 2.0, 3.0]})
    if collateral:
        u = u.assign(intra_max_shift=[0.5, 1.5, 2.5], inter_max_shift=[0.1, 0.2, 0.3], intra_flipped=[0.0, 0.5, 1.0],
                     inter_flipped=[0.0, 0.0, 0.5])
    return u


def _erased():
    return pd.DataFrame({"relation": ["r1", "r2"], "acc_before": [0.8, 0.6], "acc_after": [0.0, 0.5],
                         "ppl_before": [10.0, 10.0], "ppl_after": [50.0, 11.0],
                         "other_ppl_before": [5.0, 5.0], "other_ppl_after": [10.0, 10.0]})


def test_updates_summary_means_rates_and_medians_perplexities():
    s = T.updates_summary(_updates())
    assert (s.edits, s.relations) == (3, 2) and s.success == pytest.approx(0.5) and s["random change"] == pytest.approx(1 / 6)
    assert s["intra PPL after"] == 9.0  # the median: the exploded 1e6 does not dominate
    assert s["intra shift (orders)"] == 1.5 and s["inter flipped"] == 0.0
    assert math.isnan(T.updates_summary(_updates(collateral=False))["intra flipped"])


def test_erasures_and_their_words():
    e = T.erasures(_erased())
    assert e.loc["r1", "PPL rise"] == 5.0 and e.loc["r2", T.OTHER] == 2.0
    words = T.readings("m", T.updates_summary(_updates()), e)
    assert "3 edits in 2 relations" in words and "r1 80.0% -> 0.0%" in words and "r2 x1.1 vs x2.0" in words
    assert "flipping the top-1 answer of 50% / 0%" in words
    assert "flipping" not in T.readings("m", T.updates_summary(_updates(collateral=False)), e)
    spec = T.erasure_specificity(pd.concat({"m": e}, names=["model", "relation"]))
    assert spec.startswith("The erased relation's perplexity rose more than the other relations' in 1 of 2")
    assert "`m` r2 (x1.1 against x2.0 for the others)" in spec
    assert "holds in all of them" in T.erasure_specificity(e.loc[["r1"]])
    assert T.erasure_specificity(e.iloc[:0]) == "Nothing recorded yet."
