"""kn.quality's readers of recordings and its comparisons, against the book's own recordings and by hand."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from kn import quality

AMIG = Path(__file__).resolve().parents[2] / "book" / "results" / "amig"


def test_the_chapters_recorded_quality_recomputes_from_its_facts():
    """Each recording the amig chapter made holds its quality table and the facts it came from: the
    quality recomputed from the facts is the recorded one."""
    runs, recs = quality.recorded_runs(AMIG)
    assert runs, f"no recording under {AMIG}"
    for name, methods in runs.items():
        assert set(methods) == {"AMIG", "IG (zero)", "activation"}
        stored = recs[name][0]["quality"]
        again = quality.localization_quality(methods, seed=0)
        pd.testing.assert_frame_equal(again, stored, check_dtype=False, rtol=1e-9)


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
