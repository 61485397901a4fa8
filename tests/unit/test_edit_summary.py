"""kn.edits.summary on hand-built edit tables: means and intervals per method, the goal's verdict."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from kn.edits import summary as S


def _table():
    return pd.DataFrame({"method": ["kn-opt"] * 4 + ["rome"] * 2,
                         "reliability": [1, 1, 1, 0.5, 1, 1], "generalization": [1, 0.5, 1, 1, 0, 0],
                         "locality": [1, 1, 0.8, 1, 0.5, 0.5], "portability": [math.nan, 1, 0, math.nan, 0, 0],
                         "fluency": [5.0, 5.2, 4.8, 5.0, 3.0, 3.2], "n_neurons": [3, 4, 5, 4, 0, 0],
                         "n_params": [1, 1, 1, 1, 9, 9], "edit_seconds": [1.0, 2.0, 3.0, 300.0, 4.0, 6.0]})


def test_means_intervals_and_order():
    s = S.by_method(_table(), order=["rome", "kn-opt", "ft"])
    assert list(s.method) == ["rome", "kn-opt"]
    k = s.set_index("method").loc["kn-opt"]
    assert k.edits == 4 and k.reliability == pytest.approx(0.875) and k.portability == pytest.approx(0.5)
    assert k.reliability_low <= k.reliability <= k.reliability_high and k.edit_seconds == 2.5  # the median: one edit's one-time work left out
    assert s.set_index("method").loc["rome", "generalization"] == 0


def test_goal_verdict_names_each_metric():
    s = S.by_method(_table())
    met, words = S.goal(s)
    assert met is False and "reliability 88% (< 95%)" in words and "locality 95% (>= 90%)" in words
    met, _ = S.goal(s, "batch")
    assert met is True
    assert S.goal(s, method="ft")[0] is None
    met, words = S.goal(S.by_method(_table().assign(generalization=math.nan)))  # e.g. no held paraphrase
    assert met is False and "generalization not measured" in words and "locality 95% (>= 90%)" in words


def test_by_batch_summarises_each_batch_size_apart():
    t = pd.concat([_table().assign(batch=10), _table().assign(batch=100, reliability=0.0)])
    got = S.by_batch(t, order=["kn-opt", "rome"])
    assert sorted(got) == [10, 100] and list(got[100].method) == ["kn-opt", "rome"]
    assert got[10].set_index("method").loc["kn-opt", "reliability"] == pytest.approx(0.875)
    assert (got[100].reliability == 0).all() and S.goal(got[S.GOAL_BATCH], "batch")[0] is False
    assert "locality_kl" in S.METRICS and math.isnan(got[10].locality_kl.iloc[0])  # not in this table: NaN


def test_crosslingual_reliability_per_method_and_measured_language():
    t = pd.DataFrame({"fact_id": ["a", "b", "a", "a", "b"], "language": ["en", "en", "en", "xx", "en"],
                      "method": ["rome", "rome", "rome", "kn-opt", "kn-opt"], "measured": ["xx", "xx", "yy", "en", "xx"],
                      "reliability": [1.0, 0.0, 0.5, 1.0, 0.25], "reliability_before": [0.0, 0.0, 0.0, 0.5, 0.0],
                      "old_known": [1.0, 1.0, 0.0, 1.0, 0.0], "old_kept": [0.0, 1.0, 0.0, 0.0, 0.0]})
    s = S.crosslingual(t, order=["kn-opt", "rome", "ft"])
    assert list(zip(s.method, s.measured)) == [("kn-opt", "en"), ("kn-opt", "xx"), ("rome", "xx"), ("rome", "yy")]
    r = s.set_index(["method", "measured"]).loc[("rome", "xx")]
    assert r.edits == 2 and r.reliability == 0.5 and r.reliability_low <= 0.5 <= r.reliability_high
    assert r.old_known == 1.0 and r.old_kept == 0.5 and r.reliability_before == 0.0
    assert s.set_index(["method", "measured"]).loc[("kn-opt", "xx"), "reliability"] == 0.25
    assert S.crosslingual(t.iloc[:0]).empty and list(S.crosslingual(t.iloc[:0]).columns)[:3] == ["method", "measured", "edits"]


def test_a_table_with_neuron_sets_is_summarised_per_method_and_set():
    """neurons_from (the edit phase's edit_neuron_sets): a row per (method, set), the sets in own, likn,
    specific order within a method, ft's and rome's empty set a group of its own; goal reads the own row."""
    t = pd.concat([_table().assign(neurons_from=["own"] * 4 + [None] * 2),
                   _table().iloc[:4].assign(neurons_from="specific", reliability=0.0),
                   _table().iloc[:2].assign(neurons_from="likn", reliability=1.0)], ignore_index=True)
    s = S.by_method(t, order=["rome", "kn-opt", "ft"])
    assert list(s.method) == ["rome", "kn-opt", "kn-opt", "kn-opt"] and pd.isna(s.neurons_from.iloc[0])
    assert list(s.neurons_from.iloc[1:]) == ["own", "likn", "specific"] and list(s.edits) == [2, 4, 2, 4]
    k = s.set_index(["method", "neurons_from"])
    assert k.loc[("kn-opt", "own"), "reliability"] == pytest.approx(0.875) and k.loc[("kn-opt", "specific"), "reliability"] == 0
    assert S.goal(s)[1] == S.goal(S.by_method(_table()))[1]  # the own set's, as without the sets
    x = pd.DataFrame({"method": ["dai"] * 4, "neurons_from": ["specific", "own", "likn", "own"],
                      "measured": ["xx", "xx", "xx", "yy"], "reliability": [0.0, 1.0, 0.5, 1.0],
                      "reliability_before": 0.0, "old_known": 1.0, "old_kept": 1.0})
    c = S.crosslingual(x, order=["dai"])
    assert list(zip(c.neurons_from, c.measured)) == [("own", "xx"), ("own", "yy"), ("likn", "xx"), ("specific", "xx")]
    assert list(c.reliability) == [1.0, 1.0, 0.5, 0.0] and list(S.crosslingual(x).neurons_from)[0] == "specific"


def test_methods_figure_draws_each_mean_its_interval_and_the_goal():
    from matplotlib.collections import LineCollection

    from kn.figures import edit_methods_figure

    single = S.by_method(_table(), order=["kn-opt", "rome"])
    batches = S.by_batch(pd.concat([_table().assign(batch=10), _table().assign(batch=100, locality=0.25)]))
    shown, goals = S.panels(single, {100: batches[100]})
    assert list(shown) == ["single edits (4)", "batches of 100 (4 edits)"] and goals["batches of 100 (4 edits)"] == S.GOAL["batch"]
    assert S.panels(single.iloc[:0], batches)[1] == {"batches of 10 (4 edits)": {}, "batches of 100 (4 edits)": S.GOAL["batch"]}
    fig = edit_methods_figure(shown, {"single edits (4)": S.GOAL["single"]})
    one, hundred = fig.axes[:2]
    assert [one.get_title(), hundred.get_title()] == ["single edits (4)", "batches of 100 (4 edits)"]
    # bars method by method, metrics reliability, generalization, locality: the raw table's means in %
    assert [p.get_height() for p in one.patches] == pytest.approx([87.5, 87.5, 95, 100, 0, 50])
    assert [p.get_height() for p in hundred.patches][2::3] == pytest.approx([25, 25])
    assert one.get_legend_handles_labels()[1] == ["kn-opt", "rome"]
    # kn-opt's locality interval: the error bar spans the summary's low to high
    low, high = single.locality_low.iloc[0] * 100, single.locality_high.iloc[0] * 100
    spans = [seg for c in one.collections if isinstance(c, LineCollection) and c.get_linestyle()[0][1] is None
             for seg in c.get_segments()]
    assert any(seg[0][1] == pytest.approx(low) and seg[1][1] == pytest.approx(high) for seg in spans)
    # the goal: dashed at 95, 70 and 90 over the single panel's three metrics, none over the batch panel
    dashed = [c for c in one.collections if isinstance(c, LineCollection) and c.get_linestyle()[0][1] is not None]
    assert sorted(seg[0][1] for c in dashed for seg in c.get_segments()) == pytest.approx([70, 90, 95])
    assert not [c for c in hundred.collections if isinstance(c, LineCollection) and c.get_linestyle()[0][1]]


def test_methods_figure_keeps_a_method_s_colour_where_a_panel_lacks_another():
    """A method missing from one panel (it failed there) shifts no other method's colour; the legend
    names every method of every panel."""
    from matplotlib.colors import to_hex

    from kn.figures import edit_methods_figure

    both = S.by_method(_table(), order=["rome", "kn-opt"])
    fig = edit_methods_figure({"single": both, "batch": both[both.method == "kn-opt"]})
    single, batch = fig.axes[:2]
    colours = {to_hex(p.get_facecolor()) for p in batch.patches}
    assert len(colours) == 1 and colours == {to_hex(p.get_facecolor()) for p in single.patches[3:]}
    assert {to_hex(p.get_facecolor()) for p in single.patches[:3]} != colours
    legend = batch.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["rome", "kn-opt"]
    assert [to_hex(h.get_facecolor()) for h in legend.legend_handles] == [to_hex(p.get_facecolor()) for p in single.patches[::3]]


def test_failures_count_single_edits_and_batches_apart():
    t = pd.DataFrame({"method": ["dai", "dai", "dai", "rome"], "neurons_from": ["own", "own", "own", None],
                      "fact_id": ["a", "b", None, "c"], "relation": ["r", "r", None, "r"], "batch": [1, 1, 100, 1],
                      "group": [None, None, "100:0", None], "error": ["FloatingPointError", "FloatingPointError",
                                                                      "FloatingPointError", "ValueError"],
                      "message": ["first", "second", "in a batch", "rome's"]})
    f = S.failures(t, order=["rome", "dai"])
    assert list(zip(f.method, f.batch, f.failed, f.facts)) == [("rome", 1, 1, 1), ("dai", 1, 2, 2), ("dai", 100, 1, 100)]
    assert f.message.tolist() == ["rome's", "first", "in a batch"]
    assert S.failures(t.iloc[:0]).empty
