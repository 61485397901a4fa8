"""kn.quality's readers of recordings and its comparisons, against the book's own recordings and by hand."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from kn import amig_recorded, quality
from kn.runs.config import languages_of

AMIG = Path(__file__).resolve().parents[2] / "book" / "results" / "amig"


def test_the_chapters_recordings_compare_the_same_facts():
    """Every recorded model has the three methods, each in the directory its config names, run on the same
    model, languages and facts (what makes the chapter's comparison fair)."""
    runs, recs = amig_recorded.recorded_runs(AMIG)
    assert runs, f"no recording under {AMIG}"
    folder = {"AMIG": "amig", "IG (zero)": "ig-zero", "activation": "activation"}
    for name, methods in runs.items():
        assert set(methods) == set(folder), name
        for rec in recs[name]:
            method = quality.method_label(rec.provenance["run_config"]["settings"]["attribution"])
            assert rec.path.name == folder[method], (name, rec.path)
        configs = [r.provenance["run_config"] for r in recs[name]]
        assert len({(c["model"]["model"], tuple(languages_of(c))) for c in configs}) == 1, name
        facts = [set(zip(f.fact_id, f.language)) for f in methods.values()]
        assert all(f == facts[0] for f in facts), name


def test_set_overlap_by_hand():
    a = {"en": {"f": [(1, 2), (3, 4)], "g": [(0, 0)], "h": []}, "zh": {"f": [(1, 2)]}}
    b = {"en": {"f": [(1, 2)], "g": [(0, 1)], "h": [(5, 5)]}, "zh": {}}
    got = quality.set_overlap(a, b)
    assert got["en"] == pytest.approx((1 / 2 + 0 / 2) / 2)  # h: no neurons under a, left out
    assert math.isnan(got["zh"])


def test_method_label():
    assert quality.method_label({"kind": "ig", "baseline": "amig"}) == "AMIG"
    assert quality.method_label({"kind": "ig", "baseline": "zero"}) == "IG (zero)"
    assert quality.method_label({"kind": "activation"}) == "activation"


def test_styled_formats_changes_as_percents_and_the_named_columns_with_two_decimals():
    t = pd.DataFrame({"method": ["AMIG", "IG"], "suppression_related": [-0.5, math.nan],
                      "amplification_diff": [0.125, 0.0], "succ": [2.345, math.nan], "facts": [3, 4]}).set_index("method")
    html = quality.styled(t, ["succ"]).to_html()
    assert "-50.0%" in html and "+12.5%" in html and "+0.0%" in html
    assert "2.35" in html and "2.345" not in html
    assert html.count(">-<") == 2  # the two NaNs


def quality_row(method, language, succ, diff, low, high, **v):
    row = dict.fromkeys(quality.COLUMNS, math.nan)
    return row | {"method": method, "language": language, "facts": 5, "neurons_per_fact": 2.5, "succ": succ,
                  "suppression_diff": diff, "suppression_diff_low": low, "suppression_diff_high": high,
                  "amplification_diff": -diff / 2, "amplification_diff_low": -high / 2,
                  "amplification_diff_high": -low / 2} | v


def two_methods():
    return pd.DataFrame([quality_row("AMIG", "en", 3.0, -0.5, -0.6, -0.4),
                         quality_row("IG (zero)", "en", 2.0, -0.3, -0.45, -0.2, facts=4),
                         quality_row("AMIG", "zh", 1.0, -0.2, -0.3, -0.1),
                         quality_row("IG (zero)", "zh", 1.5, -0.1, -0.2, 0.0)], columns=quality.COLUMNS)


def test_against_claim_counts_the_languages_where_amig_has_the_higher_succ():
    lines = quality.against_claim("slice", two_methods()).splitlines()
    assert lines[0] == "**slice**: AMIG's Succ is higher than zero-baseline IG's in 1 of 2 languages (en)."
    assert lines[1] == ("- en: Succ 3.00 vs 2.00; suppression related - unrelated -50.0% [-60.0%, -40.0%] vs -30.0% "
                        "[-45.0%, -20.0%] (the intervals overlap); 2.5 vs 2.5 neurons per fact, 5 vs 4 facts verified.")
    assert lines[2].startswith("- zh: Succ 1.00 vs 1.50; suppression related - unrelated -20.0% [-30.0%, -10.0%] vs "
                               "-10.0% [-20.0%, +0.0%] (the intervals overlap)")
    only_amig = two_methods().iloc[[0, 2]]
    assert quality.against_claim("x", only_amig) == ("**x**: AMIG's Succ is higher than zero-baseline IG's in 0 of 0 "
                                                     "languages (none).")


def test_quality_figure_a_bar_per_method_and_language():
    from kn.figures import quality_figure

    fig = quality_figure(two_methods())
    sup, amp = fig.axes
    assert [sup.get_title(), amp.get_title()] == ["suppression: per-fact difference (95% CI)",
                                                  "amplification: per-fact difference (95% CI)"]
    assert [p.get_height() for p in sup.patches] == pytest.approx([-50, -30, -20, -10])
    assert [t.get_text() for t in sup.get_xticklabels()] == ["AMIG, en", "IG (zero), en", "AMIG, zh", "IG (zero), zh"]


def test_facts_against_agreement_reads_both_sets_per_language():
    t = pd.DataFrame([quality_row("facts", "en", 2.0, -0.5, -0.6, -0.4, suppression_related=-0.6,
                                  suppression_unrelated=-0.1, neurons_per_fact=3.0),
                      quality_row("agreement", "en", 1.0, -0.2, -0.3, -0.1, suppression_related=-0.25,
                                  suppression_unrelated=0.05, facts=7),
                      quality_row("facts", "fr", 2.0, -0.5, -0.6, -0.4)], columns=quality.COLUMNS)
    assert quality.facts_against_agreement(t, ["en", "fr"]) == (
        "- **en**: suppressing the located neurons changes a fact by -60.0% and an agreement by -25.0% (the other "
        "relation's item: -10.0% / +5.0%); 3.0 vs 2.5 neurons per item, over 5 and 7 items.")
    assert quality.facts_against_agreement(t, ["fr"]) == "Nothing was located in both sets on this slice."


def test_quality_figure_titles_its_panels():
    from kn.figures import quality_figure

    fig = quality_figure(two_methods(), "facts vs agreement (95% CI)")
    assert [ax.get_title() for ax in fig.axes] == ["suppression: facts vs agreement (95% CI)",
                                                   "amplification: facts vs agreement (95% CI)"]
