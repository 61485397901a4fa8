"""Query localization (kn.query and the run phase "query"): the measures by hand, and the phase's
numbers against an attribution and suppression of each paraphrase done here."""
from __future__ import annotations

import json
import math
import shutil

import pytest

import kn
from kn import query
from kn.localization import coarse, refine
from kn.runs import JOURNAL, run
from kn.testing import tiny_lm

from test_run import tiny_facts


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


def test_measures_by_hand():
    a, b, c = {(0, 1), (0, 2)}, {(0, 1)}, {(1, 5)}
    assert query.jaccard(a, b) == 0.5 and query.jaccard(set(), set()) == 1.0
    assert query.consistency([a, b, c]) == pytest.approx((0.5 + 0 + 0) / 3)
    assert math.isnan(query.consistency([a]))
    tops = [[(9, 9), (8, 8)], [(7, 7), (6, 6)], [(5, 5), (4, 4)]]
    held = query.held_out([a, b, a], tops, share=1.0, min_prompts=2)
    # leaving out 0: {b, a} -> (0, 1); leaving out 1: {a, a} -> (0, 1), (0, 2); leaving out 2: as 0
    assert held == [(0, [(0, 1)], [(9, 9)]), (1, [(0, 1), (0, 2)], [(7, 7), (6, 6)]), (2, [(0, 1)], [(5, 5)])]


def test_phase_against_its_definition(tmp_path):
    lm = tiny_lm("GPT-2", initializer_range=0.2)
    steps = 3
    res = run(lm, tiny_facts(), tmp_path / "r", steps=steps, phases=("locate", "query"), min_prompts=2,
              progress=False)
    t = res.query_localization
    measured = res.facts[res.facts.consistency.notna()]
    assert len(measured) and len(t)
    fid = t.fact_id.iloc[0]
    queries = res.fact_queries(fid)
    sets = [coarse(kn.attribute(lm, p, a, steps=steps), 0.2) for p, a in queries]
    assert measured.set_index("fact_id").consistency[fid] == pytest.approx(query.consistency(sets))
    assert len(t[t.fact_id == fid]) >= 1
    share = float(res.relations.set_index("relation").loc[res.fact_relation(fid), "share"])
    for row in t[t.fact_id == fid].itertuples():
        p, a = queries[row.prompt_index]
        fact_set = refine([s for i, s in enumerate(sets) if i != row.prompt_index], share, min_prompts=2)
        scores = kn.attribute(lm, p, a, steps=steps)
        query_set = [(l, i) for l, i, _ in kn.localization.top(scores, len(fact_set))]
        p0 = kn.answer_prob(lm, p, a)
        with kn.suppress(lm, fact_set):
            pf = kn.answer_prob(lm, p, a)
        with kn.suppress(lm, query_set):
            pq = kn.answer_prob(lm, p, a)
        assert row.k == len(fact_set)
        assert row.fact_set_change == pytest.approx(pf / p0 - 1, rel=1e-4, abs=1e-6)
        assert row.query_set_change == pytest.approx(pq / p0 - 1, rel=1e-4, abs=1e-6)
    # the threshold only splits the facts: no record is made anew, the share follows it
    out = tmp_path / "again"
    shutil.copytree(res.out_dir, out)
    before = (out / JOURNAL).read_text()
    strict = run(lm, tiny_facts(), out, steps=steps, phases=("locate", "query"), min_prompts=2, ql_threshold=1.0,
                 progress=False)
    assert (out / JOURNAL).read_text() == before
    c = strict.facts.consistency.dropna()
    got = strict.relations.consistent_share.dropna()
    assert len(got) and all(0 <= v <= 1 for v in got) and (c >= 1.0).mean() <= (measured.consistency >= 0.3).mean()
    assert json.loads((out / "config.json").read_text())["settings"]["query"]["ql_threshold"] == 1.0


def _facts():
    import pandas as pd

    return pd.DataFrame({"fact_id": ["a", "b", "c"], "relation": ["r"] * 3, "n_prompts": [3, 2, 1],
                         "n_neurons": [2, 1, None], "consistency": [0.5, 0.1, None], "other": [1, 2, 3]})


def _held():
    import pandas as pd

    held = pd.DataFrame({"fact_id": ["a", "a", "b", "b"], "fact_set_change": [-0.5, -0.2, -0.1, -0.3],
                         "query_set_change": [-0.6, -0.1, -0.4, -0.5]})
    return held.merge(query.consistency_kinds(_facts(), 0.3)[["fact_id", "kind"]], on="fact_id")


def test_consistency_kinds_split_at_the_threshold():
    k = query.consistency_kinds(_facts(), 0.3)
    assert k.fact_id.tolist() == ["a", "b"]  # c has no consistency
    assert k.kind.tolist() == ["consistent (K_C)", "inconsistent (K_I)"]
    assert query.consistency_kinds(_facts(), 0.5).kind.tolist()[0] == "consistent (K_C)"  # at the threshold


def test_by_kind_and_reading_of_held_paraphrases():
    t = query.by_kind(_held())
    assert t.loc["consistent (K_C)"].tolist() == pytest.approx([-0.35, -0.35, 2])
    assert t.loc["inconsistent (K_I)", "query_set_change"] == pytest.approx(-0.45)
    # query lower on 3 of 4; mean changes -40% (query) and -27.5% (fact)
    assert query.reading(_held()).startswith("On 75% of 4 held paraphrases the query's own neurons lowered "
                                             "P(answer) more than the fact-level set did (mean change -40.0% "
                                             "against -27.5%).")
    assert query.reading(_held().iloc[:0]).startswith("No fact of this slice")


def test_recorded_summary_per_recording():
    from pathlib import Path

    from kn.recording import Recording

    t = query.recorded_summary({"m": Recording(Path("m"), {"query_localization": _held()}, {})})
    assert t.loc["m"].to_dict() == pytest.approx({"held paraphrases": 4, "fact-level set": -0.275,
                                                  "query-level set": -0.4, "query lower": 0.75})


def test_consistency_and_query_sets_figures():
    from kn.figures import consistency_figure, query_sets_figure

    (ax,) = consistency_figure(query.consistency_kinds(_facts(), 0.3), 0.3).axes
    assert ax.lines[-1].get_xdata()[0] == 0.3
    assert sum(p.get_height() for p in ax.patches) == 2  # two facts in the histogram
    (ax,) = query_sets_figure(_held()).axes
    assert ax.collections[0].get_offsets().shape == (4, 2)
    assert ax.get_xlim() == (-1.05, 0.5)
