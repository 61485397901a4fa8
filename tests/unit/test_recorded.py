"""Recorded facts for the static explorer (kn.recorded, kn.recorded_view), read from book/results/likn."""
import math
from pathlib import Path

import pandas as pd
import pytest

from kn import recorded, recorded_view
from kn.checks import ArgumentError

LIKN = Path(__file__).resolve().parents[2] / "book" / "results" / "likn"


def test_facts_are_the_same_facts_in_every_language():
    facts = recorded.facts([LIKN / "gemma-3-270m", LIKN / "smollm2-135m"], per_model=2)
    table = pd.read_csv(LIKN / "gemma-3-270m" / "facts.csv")
    gemma = [f for f in facts if f.model == "gemma-3-270m"]
    assert {f.language for f in gemma} == set(table.language) and len({f.fact_id for f in gemma}) == 2
    assert {f.model for f in facts} == {"gemma-3-270m", "smollm2-135m"}
    for f in facts:
        row = table[(table.fact_id == f.fact_id) & (table.language == f.language)] if f.model == "gemma-3-270m" else None
        if row is not None:
            assert f.effect["p_suppressed"] == pytest.approx(float(row.p_suppressed.iloc[0]))
            assert len(f.neurons) == int(row.n_neurons.iloc[0])
        assert f.n_layers == (18 if f.model == "gemma-3-270m" else 30)


def test_grid_marks_each_neuron_at_its_layer():
    fact = recorded.facts([LIKN / "gemma-3-270m"], per_model=1)[0]
    grid = recorded.grid(fact)
    assert grid.shape == (fact.n_layers, len(fact.neurons)) and list(grid.index)[0] == fact.n_layers - 1
    marked = [(layer, col) for col in grid.columns for layer in grid.index if not math.isnan(grid.loc[layer, col])]
    assert marked == [(int(l), f"{l}:{i}") for l, i in zip(fact.neurons.layer, fact.neurons["index"])]
    values = grid.stack().dropna()
    assert len(values) == len(fact.neurons) and ((values > 0) & (values <= 1)).all()
    html = recorded_view.fact_html(fact)
    assert html.count("kn-recorded-cell") == len(fact.neurons) and fact.answer in html


def test_a_directory_without_a_recording_is_named(tmp_path):
    with pytest.raises(ArgumentError, match="is not a recording with facts.csv and neurons.csv"):
        recorded.facts([tmp_path])
    with pytest.raises(ArgumentError, match="per_model must be >= 1"):
        recorded.facts([LIKN / "gemma-3-270m"], per_model=0)


def test_the_explorer_links_the_pick_to_the_pages():
    pytest.importorskip("ipywidgets")
    facts = recorded.facts([LIKN / "smollm2-135m"], per_model=2)
    box = recorded_view.recorded_explorer(facts)
    pick, pages = box.children
    assert len(pick.options) == len(pages.children) == len(facts)
    assert pages.selected_index == 0 and pick.index == 0  # switching is the browser's (jslink): tests/book/test_browser.py
    with pytest.raises(ValueError, match="no recorded facts"):
        recorded_view.recorded_explorer([])
