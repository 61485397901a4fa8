"""kn.layer_map and its figure on hand-made run tables."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from kn.layer_map import effects, layer_map


def _tables():
    neurons = pd.DataFrame({"fact_id": ["a", "a", "a", "b", "c", "c"], "relation": ["r1", "r1", "r1", "r1", "r2", "r2"],
                            "layer": [0, 2, 2, 2, 1, 1], "index": [5, 6, 7, 6, 1, 2]})
    relations = pd.DataFrame({"relation": ["r2", "r1", "r3"], "facts_with_neurons": [1, 2, 0],
                              "suppression": [-0.5, -0.9, math.nan], "amplification": [0.2, 1.0, math.nan],
                              "control_other_suppression": [-0.1, -0.3, math.nan], "p_before": [0.1, 0.2, 0.3]})
    return neurons, relations


def test_counts_per_fact_by_hand():
    neurons, relations = _tables()
    m = layer_map(neurons, relations, 4)
    assert list(m.index) == ["r2", "r1", "r3"] and list(m.columns) == [0, 1, 2, 3]
    # r1: 2 facts with sets; layer 0 holds 1 neuron, layer 2 holds 3 (a's two and b's one)
    assert m.loc["r1"].tolist() == [0.5, 0.0, 1.5, 0.0]
    assert m.loc["r2"].tolist() == [0.0, 2.0, 0.0, 0.0]
    assert m.loc["r3"].isna().all()  # no fact with a set: no rate
    assert list(effects(relations).columns) == ["suppression", "amplification", "control_other_suppression"]


def test_figure_has_a_row_per_relation_and_a_bar_per_effect():
    from kn.figures import layer_map_figure

    neurons, relations = _tables()
    fig = layer_map_figure(layer_map(neurons, relations, 4), effects(relations), title="t")
    heat, side = [a for a in fig.axes if a.get_label() != "<colorbar>"]  # heat map, effects
    assert [t.get_text() for t in heat.get_yticklabels()] == ["r2", "r1", "r3"]
    assert len(side.patches) == 3 * 3
    assert sorted(round(p.get_width(), 6) for p in side.patches if not math.isnan(p.get_width()))[:2] == [-90.0, -50.0]
    assert len(layer_map_figure(layer_map(neurons, relations, 4)).axes) == 2  # heat map and colour bar


def test_readings_by_hand():
    from kn.layer_map import layer_shares, readings

    neurons, relations = _tables()
    assert layer_shares(neurons, 4).tolist() == [1 / 6, 2 / 6, 3 / 6, 0.0]
    assert layer_shares(neurons.iloc[:0], 2).tolist() == [0.0, 0.0]
    text = readings(neurons, relations, 4)
    assert "3 facts of 2 relations have knowledge neurons, 6 in all (2.0 per fact)" in text
    # layer 2 holds 3 of 6; the top third of 4 layers is layer 3 alone, which holds none
    assert "Layer 2 holds the most (50%); the top third of the layers (3-3) holds 0%" in text
    # r1's mean layer (0 + 2 + 2 + 2) / 4 = 1.5, r2's 1
    assert "Lowest on average: r2 (mean layer 1.0); highest: r1 (1.5)" in text
    # r1 -90%, r2 -50%: both at least half; the weakest r2; controls -10% and -30%: median -20%
    assert "at least half in 2 of 2 relations (weakest: r2, -50%); a fact of another relation changes by -20%" in text


def test_setting_words_say_the_rule_points_and_layers():
    from kn.layer_map import setting_words

    assert setting_words({"kind": "ig", "rule": "gauss_legendre", "steps": 3, "screen": None}) == \
        "IG with Gauss-Legendre, 3 points, over every layer"
    assert setting_words({"kind": "ig", "rule": "riemann_left", "steps": 20, "screen": 3}) == \
        "IG with the left Riemann sum, 20 points, on the 3 layers a gradient x activation screen picks per prompt"
    assert setting_words({"kind": "gradxact"}) == "gradxact scores over every layer"
