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
