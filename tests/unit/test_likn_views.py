"""The language-independent chapter's tables, readings and figures (kn.crosslingual, kn.likn_recorded,
kn.figures), on small frames built here with the numbers worked out by hand."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from kn import crosslingual, figures, likn_recorded
from kn.recording import Recording

NAN = float("nan")


def summ_row(condition, source, measured, **v):
    row = dict.fromkeys(crosslingual.SUMMARY, NAN)
    return row | {"condition": condition, "source": source, "measured": measured, "facts": 4} | v


def two_language_summary():
    return pd.DataFrame([
        summ_row("likn", "all", "en", suppression_related=-0.5, amplification_related=0.25, suppression_diff=-0.4,
                 suppression_diff_low=-0.6, suppression_diff_high=-0.2, amplification_diff=0.1,
                 amplification_diff_low=0.0, amplification_diff_high=0.3, succ=1.234),
        summ_row("mono", "en", "en", suppression_related=-0.8, suppression_unrelated=-0.1, suppression_diff=-0.7,
                 suppression_diff_low=-0.9, suppression_diff_high=-0.5, amplification_diff=0.2,
                 amplification_diff_low=0.1, amplification_diff_high=0.3),
        summ_row("mono", "zh", "en", suppression_related=-0.3, suppression_unrelated=-0.05, suppression_diff=-0.25,
                 suppression_diff_low=-0.35, suppression_diff_high=-0.15, amplification_diff=0.0,
                 amplification_diff_low=-0.1, amplification_diff_high=0.1),
    ], columns=crosslingual.SUMMARY)


def test_reading_names_each_pairs_own_and_other_suppression_and_the_likn():
    got = crosslingual.reading(two_language_summary(), ["en", "zh"])
    assert got.splitlines() == [
        "- In **en**, suppressing en's own neurons changes the fact by -80.0%, zh's neurons by -30.0% "
        "(unrelated: -10.0% / -5.0%).",
        "- The LIKN alone, measured in **en**: -50.0% suppressed, +25.0% amplified, over 4 facts."]
    # zh's own neurons are not measured in zh: no sentence for zh
    assert crosslingual.reading(two_language_summary().iloc[:1], ["zh"]) == "No fact has neurons in two languages here."


def test_effects_table_is_indexed_by_condition_and_formats_percents_and_succ():
    styler = crosslingual.effects_table(two_language_summary())
    assert list(styler.data.index.names) == ["condition", "source", "measured"]
    assert ("mono", "zh", "en") in styler.data.index
    html = styler.to_html()
    assert "-50.0%" in html and "+25.0%" in html and "1.23" in html and "1.234" not in html


def edits():
    rows = []
    for neurons, measured, success, p_new_after in (("likn", "en", 1.0, 0.4), ("likn", "en", 0.5, 0.2),
                                                    ("likn", "zh", 0.0, 0.1), ("mono", "zh", 0.5, 0.05)):
        rows.append({"fact_id": "f", "relation": "r", "edit_language": "en", "neurons": neurons, "n_neurons": 2,
                     "old": "a", "new": "b", "measured": measured, "n_prompts": 2, "n_right": 2, "success": success,
                     "changed": 1.0, "p_old_before": 0.5, "p_old_after": 0.25, "p_new_before": 0.1,
                     "p_new_after": p_new_after})
    return pd.DataFrame(rows, columns=crosslingual.EDIT_COLUMNS)


def test_edit_ratios_and_their_summary_by_edit_neurons_and_language():
    e = crosslingual.edit_ratios(edits())
    assert e.p_new_ratio.tolist() == pytest.approx([4, 2, 1, 0.5])
    assert e.p_old_ratio.tolist() == pytest.approx([0.5] * 4)
    t = crosslingual.edits_summary(edits())
    assert list(t.index) == [("en", "likn", "en"), ("en", "likn", "zh"), ("en", "mono", "zh")]
    assert t.loc[("en", "likn", "en"), "success"] == 0.75
    assert t.loc[("en", "likn", "en"), "p_new_ratio"] == 3.0
    assert list(t.columns) == ["n_neurons", "success", "changed", "p_old_ratio", "p_new_ratio"]


def recording(tables, n_layers=6):
    return Recording(Path("m"), tables, {"run_config": {"languages": ["en", "zh"],
                                                        "model": {"n_layers": n_layers}}})


def likn_table():
    # f1: LIKN 2 of 3 in the union; f2: neurons in two languages, none shared; f3: one language only
    return pd.DataFrame({"fact_id": ["f1", "f2", "f3"], "languages_with_neurons": [2, 2, 1],
                         "n_likn": [2, 0, 0], "n_likn_q": [2, 0, 0]})


def neurons_table():
    # f1: (5, 0) and (4, 1) in both languages, (0, 3) in en only; f2: (5, 2) in en, (1, 1) in zh
    rows = [("f1", "en", 5, 0), ("f1", "zh", 5, 0), ("f1", "en", 4, 1), ("f1", "zh", 4, 1), ("f1", "en", 0, 3),
            ("f2", "en", 5, 2), ("f2", "zh", 1, 1)]
    return pd.DataFrame(rows, columns=["fact_id", "language", "layer", "index"])


def test_counts_per_recording():
    t = likn_recorded.counts({"m": recording({"likn": likn_table()})}, q=2)
    assert t.loc["m"].to_dict() == {"languages": "en, zh", "facts": 3, "with neurons in >= 2 languages": 2,
                                    "with LIKN (all languages)": 1, "LIKN per fact": 1.0, "with neurons in >= 2": 1,
                                    "in >= 2 per fact": 1.0}


def test_against_claim_counts_facts_and_the_top_thirds_shares():
    got = likn_recorded.against_claim("m", recording({"likn": likn_table(), "neurons": neurons_table()}))
    lines = got.splitlines()
    assert lines[0] == "**m** (en, zh, 3 facts):"
    assert "LIKN exist for 1 of 2 facts with neurons in at least two languages (50%)" in lines[1]
    # top third of 6 layers: 4-5. LIKN (5,0), (4,1): both there; one-language: (0,3), (5,2), (1,1): 1 of 3
    assert lines[2] == ("- In the top third of the layers (4-5): 100% of the LIKN, 100% of the neurons in >= 2 "
                        "languages, 33% of the one-language neurons.")
    assert len(lines) == 3


def test_against_claim_reads_the_edits_in_the_edited_language_and_the_others():
    e = edits()
    got = likn_recorded.against_claim("m", recording({"likn": likn_table(), "neurons": neurons_table(),
                                                      "crosslingual_edits": e}))
    lines = got.splitlines()[3:]
    assert lines[0] == ("- Edit through the LIKN, measured in the edited language: the new object became top-1 on "
                        "75% of the prompts, the old one was displaced on 100%, P(new) x3 (median).")
    assert lines[1].startswith("- Edit through the LIKN, measured in the other languages: the new object became "
                               "top-1 on 0%")
    assert "one language’s own neurons, measured in the other languages" in lines[2] and "x0.5" in lines[2]


def crosslingual_rows():
    """One fact f (unrelated control g): per condition, P before 1, after suppression `rel` (related)
    and `unr` (unrelated); amplification leaves P at 1."""
    rows = []
    for cond, src, meas, rel, unr in (("likn", "all", "en", 0.4, 0.9), ("likn", "all", "zh", 0.5, 1.0),
                                      ("mono", "zh", "en", 0.8, 0.9), ("mono", "en", "zh", 0.6, 1.0)):
        for target, p in (("related", rel), ("unrelated", unr)):
            rows.append({"fact_id": "f", "relation": "r", "condition": cond, "source": src, "measured": meas,
                         "target": target, "target_fact": "f" if target == "related" else "g", "n_neurons": 1,
                         "p_before": 1.0, "p_suppressed": p, "p_amplified": 1.0, "suppression": p - 1,
                         "amplification": 0.0})
    return pd.DataFrame(rows, columns=crosslingual.COLUMNS)


def test_against_claim_sets_the_likns_suppression_against_another_languages_neurons():
    got = likn_recorded.against_claim("m", recording({"likn": likn_table(), "neurons": neurons_table(),
                                                      "crosslingual": crosslingual_rows()}))
    lines = got.splitlines()[3:]
    # en: LIKN -60% - (-10%) = -50%; zh's own neurons in en: -20% - (-10%) = -10%
    assert lines[0] == ("- Measured in **en**: suppressing the LIKN, related - unrelated -50.0% [-50.0%, -50.0%] over "
                        "1 facts; another language's own neurons -10.0% (mean over 1 languages, from 1-1 facts).")
    assert lines[1].startswith("- Measured in **zh**: suppressing the LIKN, related - unrelated -50.0%")
    assert "own neurons -40.0%" in lines[1]


def titles(fig):
    return [ax.get_title() for ax in fig.axes]


def test_likn_layers_figure_bars_per_layer_and_the_overlap_heatmap():
    sets = {"en": {"f1": [(5, 0), (4, 1), (0, 3)], "f2": [(5, 2)]}, "zh": {"f1": [(5, 0), (4, 1)], "f2": [(1, 1)]}}
    fig = figures.likn_layers_figure(sets, 6, ["en", "zh"], title="m: ")
    bars, heat = fig.axes[:2]
    assert len(fig.axes) == 3  # and the heatmap's colorbar
    assert len(bars.patches) == 6 * 3  # one language, >= 2, LIKN per layer
    assert titles(fig)[:2] == ["m: knowledge neurons by layer", "mean Jaccard overlap of a fact's neuron sets"]
    # f1: 2/3, f2: 0 -> mean 1/3 off the diagonal
    assert sorted(t.get_text() for t in heat.texts) == ["0.33", "0.33", "1.00", "1.00"]


def test_crosslingual_effects_figure_a_bar_per_condition_in_each_panel():
    s = two_language_summary()
    fig = figures.crosslingual_effects_figure(s, "m: ")
    assert titles(fig) == ["m: suppression (95% CI over facts)", "m: amplification (95% CI over facts)"]
    sup = fig.axes[0]
    assert [p.get_width() for p in sup.patches] == pytest.approx([-40, -70, -25])
    assert [t.get_text() for t in sup.get_yticklabels()] == ["likn: all in en", "mono: en in en", "mono: zh in en"]


def test_crosslingual_edits_figure_mean_ratio_per_language_and_neurons():
    fig = figures.crosslingual_edits_figure(edits(), "m: ")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_title() == "m: an edit's reach across languages"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["en (edited)", "zh"]
    heights = sorted(p.get_height() for p in ax.patches if p.get_height() == p.get_height() and p.get_height() > 0)
    assert heights == pytest.approx([0.5, 1.0, 3.0])  # likn in en (4, 2), likn in zh, mono in zh


def test_coverage_figure_stacks_answers_and_shows_the_known_share():
    c = pd.DataFrame({"single_token": [5, 3], "multi_token": [2, 4], "no_prompt": [0, 1], "known_share": [0.5, 0.25],
                      "probed": [8, 10]}, index=pd.Index(["en", "ja"], name="language"))
    fig = figures.coverage_figure(c)
    assert titles(fig) == ["answers: one token, several, or no usable prompt", "known, of 10 probed"]
    assert len(fig.axes[0].patches) == 3 * 2
    assert [p.get_height() for p in fig.axes[1].patches] == [0.5, 0.25]
