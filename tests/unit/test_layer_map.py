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
