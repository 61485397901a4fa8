"""kn.dkn_tables and the degenerate chapter's figures, on small tables built here."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kn import dkn_tables, figures
from kn.recording import Recording


def facts():
    return pd.DataFrame({"fact_id": ["a", "b", "c", "d"], "relation": ["r1", "r1", "r2", "r2"],
                         "n_neurons": [4.0, 2.0, np.nan, 6.0], "dkn_pairs": [2, 0, 0, 1],
                         "dkn_neurons": [3, 0, 0, 2]})


def effects():
    return pd.DataFrame({"fact_id": ["a", "a", "d"], "p0": [0.5, 0.4, 0.2], "a_off": [0.5, 0.4, 0.1],
                         "b_off": [0.25, 0.4, 0.2], "both_off": [0.1, 0.2, 0.05]})


def test_relative_effects_divide_by_p0():
    r = dkn_tables.relative_effects(effects())
    assert list(r.columns) == ["one off (a)", "one off (b)", "both off"]
    assert r["one off (b)"].tolist() == [0.5, 1.0, 1.0] and r["both off"].tolist() == [0.2, 0.5, 0.25]


def test_by_relation_over_the_located_facts():
    t = dkn_tables.by_relation(facts())
    assert t.loc["r1"].to_dict() == {"facts": 2, "with_pairs": 1, "pairs_per_fact": 1.0, "dkn_neurons_per_fact": 1.5,
                                     "kns_per_fact": 3.0}
    assert t.loc["r2", "facts"] == 1  # c was not located


def test_recorded_summary_per_run():
    rec = Recording(Path("m"), {"facts": facts(), "pair_effects": effects()}, {})
    none = Recording(Path("n"), {"facts": facts(), "pair_effects": effects().iloc[:0]}, {})
    t = dkn_tables.recorded_summary({"m": rec, "n": none})
    # one off: (1, 0.5) (1, 1) (0.5, 1) -> 5 / 6; both off: (0.2 + 0.5 + 0.25) / 3
    assert t.loc["m", "P, one off / P0"] == pytest.approx(round(5 / 6, 3))
    assert t.loc["m", "P, both off / P0"] == pytest.approx(round(0.95 / 3, 3))
    assert t.loc["m", "facts located"] == 3 and t.loc["m", "with pairs"] == 2 and t.loc["m", "KNs per fact"] == 4
    assert math.isnan(t.loc["n", "P, both off / P0"])


def test_degenerate_layers_figure_counts_pairs_below_the_diagonal():
    pairs = pd.DataFrame({"layer_a": [2, 0, 2], "layer_b": [0, 2, 1]})
    neurons = pd.DataFrame({"layer": [1, 1, 2, 0]})
    fig = figures.degenerate_layers_figure(pairs, neurons, 3)
    heat, bars = fig.axes[:2]
    assert heat.get_title() == "degenerate pairs by layers" and bars.get_title() == "where they sit"
    grid = heat.collections[0].get_array()
    assert np.ma.filled(grid, -1).reshape(3, 3)[2].tolist() == [2, 1, 0]  # (2, 0) twice, (2, 1) once
    shares = [p.get_height() for p in bars.patches]
    assert shares == pytest.approx([2 / 6, 1 / 6, 3 / 6, 1 / 4, 2 / 4, 1 / 4])  # pairs' neurons, then KNs


def test_pair_effects_figure_boxes_and_the_rules_lines():
    fig = figures.pair_effects_figure(effects(), single=0.2, pair=0.25)
    (ax,) = fig.axes
    assert ax.get_title() == "3 (prompt, pair) measurements, 2 facts"
    assert [l.get_ydata()[0] for l in ax.lines[-2:]] == [0.8, 0.75]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["one off (a)", "one off (b)", "both off"]


def test_suppression_curves_figure_a_line_per_fact_and_the_median():
    curves = pd.DataFrame({"a": [1.0, 0.5, 0.1], "b": [1.0, 0.9, 0.3]}, index=pd.Index([0, 1, 2], name="k"))
    (ax,) = figures.suppression_curves_figure(curves, pair=0.25).axes
    assert len(ax.lines) == 2 + 1 + 1
    assert ax.lines[2].get_ydata().tolist() == pytest.approx([1.0, 0.7, 0.2])
    assert ax.get_yscale() == "log"
