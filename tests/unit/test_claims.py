"""kn.claims: the verdict rule by hand, each claim judged on planted recordings where the answer is
known, and every claim of the book's own recordings judged."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from kn import claims, recording

RESULTS = Path(__file__).resolve().parents[2] / "book" / "results"


@pytest.mark.parametrize("value, low, high, paper, sign, verdict", [
    (-0.5, -0.6, -0.4, -0.3, -1, "holds"),               # stronger than the paper's
    (-0.2, -0.25, -0.15, -0.3, -1, "holds in direction"),  # the right way, short of it
    (-0.28, -0.35, -0.21, -0.3, -1, "holds"),             # the paper's number inside the interval
    (-0.1, -0.3, 0.1, -0.3, -1, "does not hold"),         # includes 0
    (0.2, 0.1, 0.3, -0.3, -1, "does not hold"),           # the other way
    (0.2, 0.1, 0.3, math.nan, +1, "holds"),               # no paper number: the direction is the claim
    (math.nan, math.nan, math.nan, 0.3, +1, "does not hold"),
])
def test_against(value, low, high, paper, sign, verdict):
    assert claims.against(value, low, high, paper, sign)[0] == verdict


def _prov(**cfg):
    return recording.provenance("kn run (planted)", kn_commit="abc", run_config=cfg or None)


def test_planted_recordings_get_the_verdicts_they_were_made_for(tmp_path):
    (tmp_path / "papers.csv").write_text((RESULTS / "papers.csv").read_text())
    cfg = {"model": {"model": "m"}, "settings": {"languages": ["en"], "phases": ["locate"]}, "format": 3}
    # suppression: every relation clearly down; amplification: around 0
    rel = pd.DataFrame({"relation": list("abcdef"), "suppression": [-0.5, -0.6, -0.55, -0.45, -0.5, -0.6],
                        "amplification": [0.1, -0.1, 0.05, -0.05, 0.2, -0.2]})
    facts = pd.DataFrame({"fact_id": list("abcd"), "suppression": [-0.5] * 4, "control_other_suppression": [-0.5] * 4})
    recording.record(tmp_path / "pararel" / "m-ig", {"relations": rel, "facts": facts}, _prov(**cfg))
    # updates: knowledge neurons never beat random ones; erasing: specific in both relations
    upd = pd.DataFrame({"success": [0.0, 0.1, 0.0, 0.1], "random_success": [0.1, 0.0, 0.1, 0.0]})
    er = pd.DataFrame({"relation": ["a", "b"], "ppl_before": [2.0, 2.0], "ppl_after": [9.0, 8.0],
                       "other_ppl_before": [3.0, 3.0], "other_ppl_after": [3.3, 3.1]})
    recording.record(tmp_path / "editing" / "m", {"updates": upd, "erased": er}, _prov(**cfg))
    t = claims.table(tmp_path).set_index("claim")
    assert t.loc["dai-suppress", "verdict"] == "holds"
    assert t.loc["dai-amplify", "verdict"] == "does not hold"
    assert t.loc["dai-specific", "verdict"] == "does not hold"  # the same change on the other relation's fact
    assert t.loc["dai-update", "verdict"] == "does not hold" and "random" in t.loc["dai-update", "reason"]
    assert t.loc["dai-erase", "verdict"] == "holds" and t.loc["dai-erase", "ours"] == 1.0
    for cid in ("chen-amig", "chen-likn", "chen-dkn", "chen-factcheck"):  # nothing recorded for them here
        assert t.loc[cid, "verdict"] == "not testable here"
    assert t.loc["dai-suppress", "paper_value"] == pytest.approx(-0.2903)
    assert t.loc["chen-amig", "paper_source"].startswith("paper (Journey")
    shown, why = claims.readable(claims.table(tmp_path))
    assert "value not given" in set(shown["paper's number"]) and list(shown.columns)[-1] == "verdict"
    assert len(why) == len(shown) and "random" in " ".join(why.reason)


def test_every_claim_is_judged_on_the_books_recordings():
    t = claims.table(RESULTS)
    assert set(t.claim) == set(claims.CLAIMS)
    assert set(t.verdict) <= set(claims.VERDICTS)
    assert (t[t.verdict != "not testable here"].recording != "").all()
    assert t.groupby("paper").claim.nunique().to_dict() == {"Chen et al. 2024": 6, "Dai et al. 2022": 5}
