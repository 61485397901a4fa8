"""kn.at_scale on hand-built run tables: the relation table's mean row, the stats and their words."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from kn import at_scale


def _relations(sup=(-0.9, -0.5), shares=(0.95, 0.5)):
    return pd.DataFrame({"relation": ["r1", "r2"], "facts_verified": [3, 2], "neurons_per_fact": [2.0, 4.0],
                         "share": list(shares), "suppression": list(sup), "amplification": [1.0, 0.2],
                         "control_other_suppression": [-0.2, 0.0], "control_other_amplification": [0.1, 0.3],
                         "control_same_suppression": [-0.6, -0.4], "control_same_amplification": [0.5, 0.1],
                         "max_facts_sharing": [3, 1], "neurons_per_fact_extra": [0, 0]})


def _neurons():
    return pd.DataFrame({"fact_id": ["a", "a", "b", "c"], "relation": ["r1", "r1", "r1", "r2"],
                         "layer": [5, 7, 5, 5], "index": [1, 2, 1, 1]})


def _facts():
    return pd.DataFrame({"fact_id": ["a", "b", "c", "d"], "n_neurons": [2, 1, 1, 0]})


def test_relation_table_means_over_relations_and_sums_the_facts():
    t = at_scale.relation_table(_relations())
    assert list(t.index) == ["r1", "r2", "mean"] and list(t.columns) == at_scale.COLUMNS
    assert t.loc["mean", "suppression"] == pytest.approx(-0.7) and t.loc["mean", "facts_verified"] == 5
    assert math.isnan(t.loc["mean", "max_facts_sharing"])


def test_stats_count_by_hand_and_read_in_words():
    s = at_scale.stats(_facts(), _neurons(), _relations(), 18)
    assert (s["facts"], s["facts_with_neurons"], s["fact_neuron_pairs"]) == (4, 3, 4)
    assert (s["distinct"], s["multi_relation"]) == (2, 1)  # (5, 1) is found in r1 and r2
    assert (s["top_layer"], s["top_layer_pairs"], s["last_layer"]) == (5, 3, 17)
    assert s["ceiling_relations"] == 1 and s["most_shared"] == 3 and s["other_sup"] == pytest.approx(-0.1)
    words = at_scale.readings("m", s, -0.29, 0.31)
    assert "by -70.0%" in words and "stronger than the paper's -29.00%" in words
    assert "2 distinct neurons, 1 of them found in more than one relation" in words
    assert "activation baseline of this model is not recorded" in words
    weak = at_scale.readings("m", at_scale.stats(_facts(), _neurons(), _relations(sup=(-0.1, -0.1)), 18), -0.29, 0.31)
    assert "weaker than" in weak
    act = _relations().assign(neurons_per_fact=[6.0, 8.0], suppression=[-0.2, -0.4])
    with_act = at_scale.stats(_facts(), _neurons(), _relations(), 18, act)
    assert with_act["act_neurons"] == 7.0 and "finds 7.0 neurons per fact" in at_scale.readings("m", with_act, -0.29, 0.31)


def test_beside_and_headline_labels():
    b = at_scale.beside(_relations(), _relations().assign(suppression=[-0.1, -0.2]))
    assert b.loc["r2", "IG sup."] == -0.5 and b.loc["r2", "act. sup."] == -0.2
    h = at_scale.headline({"suppression": -0.5, "amplification": 0.2, "control_other_suppression": 0.0,
                           "control_other_amplification": 0.1, "control_same_suppression": -0.3,
                           "control_same_amplification": 0.2, "neurons_per_fact": 3.0})
    assert h["control (same relation) sup."] == -0.3 and h["neurons per fact"] == 3.0
