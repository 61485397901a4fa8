"""Phase "specificity" (Dai et al.'s common-neuron filter): checked against sets filtered by hand from
the run's neurons table and zeroed with `kn.suppress`, and a settings change that recomputes."""
from __future__ import annotations

import json
import math
from collections import Counter

import pandas as pd
import pytest

import kn
from kn import specificity as S
from kn.runs import run
from kn.testing import tiny_lm

from test_run import tiny_facts

STEPS = 3
PHASES = ("locate", "verify", "specificity")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("GPT-2", initializer_range=0.2)


@pytest.fixture(scope="module")
def result(lm, tmp_path_factory):
    return run(lm, tiny_facts(), tmp_path_factory.mktemp("spec") / "r", steps=STEPS, phases=PHASES, min_prompts=2,
               common_shares=(0.5, 0.25), progress=False)


def test_filter_by_hand():
    a, b, c = (0, 1), (0, 2), (1, 3)
    kns = {"r/1": [a, b], "r/2": [a], "r/3": [a, c], "r/4": [], "q/1": [a, b], "q/2": [c]}
    common = S.commonness(kns, {f: f.split("/")[0] for f in kns})
    assert common.share(a, "r", "relation") == 3 / 4 and common.share(b, "r", "relation") == 1 / 4
    assert common.share(a, "q", "run") == 4 / 6 and common.share(c, "r", "run") == 2 / 6
    assert S.filtered([a, b], "r", common, "relation", 0.5) == [b]
    assert S.filtered([a, b], "r", common, "relation", 0.75) == [a, b]  # "more than" the share goes
    assert S.filtered([a, b], "q", common, "relation", 0.5) == [a, b]  # q: each in 1 of 2 facts
    assert S.filtered([a, b, c], "r", common, "run", 0.34) == [b, c] and S.filtered([a, b, c], "r", common, "run", 0.3) == []
    assert S.change([0.5, 0.3], [0.1, 0.1]) == pytest.approx(0.1 / 0.4 - 1) and math.isnan(S.change([], []))


def test_summary_and_best():
    t = pd.DataFrame({"scope": ["none"] * 2 + ["relation"] * 2 + ["run"] * 2, "share": [math.nan, math.nan, .1, .1, .1, .1],
                      "k": [5, 7, 2, 0, 1, 1], "fact_change": [-.9, -.95, -.7, -.6, -.4, -.3],
                      "other_change": [-.4, -.3, -.02, .0, .0, .0], "same_change": [-.8, -.8, -.1, -.2, 0, 0]})
    s = S.summarize(t)
    assert list(s.scope) == ["none", "relation", "run"] and list(s.meets) == [False, True, False]
    assert s.set_index("scope").loc["relation", "emptied"] == 0.5
    assert s.set_index("scope").loc["relation", "fact"] == pytest.approx(-0.65)
    assert S.best(s).scope == "relation" and S.best(s[s.scope == "run"]) is None


def _by_hand(lm, res, fid: str, scope: str, share: float) -> tuple[list, dict]:
    """The fact's filtered set from the neurons table, and each query group's P change with it zeroed."""
    ok = res.facts[res.facts.error.isna()]
    rel = ok.set_index("fact_id").relation
    sets = {f: {(int(l), int(i)) for l, i in zip(g.layer, g["index"])} for f, g in res.neurons.groupby("fact_id")}
    sets |= {f: set() for f in ok.fact_id if f not in sets}
    pool = [f for f in ok.fact_id if scope == "run" or rel[f] == rel[fid]]
    counts = Counter(n for f in pool for n in sets[f])
    kept = [n for n in sets[fid] if counts[n] / len(pool) <= share]
    row = res.facts.set_index("fact_id").loc[fid]
    out = {}
    for group, qf in (("fact", fid), ("other", row.control_other_fact), ("same", row.control_same_fact)):
        queries = res.fact_queries(qf)
        before = [kn.answer_prob(lm, p, a) for p, a in queries]
        with kn.suppress(lm, kept):
            after = [kn.answer_prob(lm, p, a) for p, a in queries]
        out[group] = sum(after) / sum(before) - 1
    return kept, out


def test_phase_against_hand_filtered_sets(lm, result):
    t = result.specificity
    assert set(zip(t.scope, t.share.fillna(-1))) == {("none", -1), ("relation", .5), ("relation", .25),
                                                     ("run", .5), ("run", .25)}
    raw = t[t.scope == "none"].set_index("fact_id")
    facts = result.facts.set_index("fact_id")
    # the raw sets are verify's: same fact, same controls, same numbers
    for fid, r in raw.iterrows():
        assert r.k == facts.n_neurons[fid]
        assert r.fact_change == pytest.approx(facts.suppression[fid], rel=1e-4, abs=1e-6)
        assert r.other_change == pytest.approx(facts.control_other_suppression[fid], rel=1e-4, abs=1e-6)
    changed = 0
    for row in t[t.scope != "none"].itertuples():
        kept, want = _by_hand(lm, result, row.fact_id, row.scope, row.share)
        assert row.k == len(kept)
        for g in ("fact", "other", "same"):
            assert getattr(row, f"{g}_change") == pytest.approx(want[g], rel=1e-4, abs=1e-6)
        changed += row.k < raw.k[row.fact_id]
    assert changed, "no condition dropped a neuron: the test shows nothing"


def test_shares_change_recomputes(lm, result, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(result.out_dir, out)
    again = run(lm, tiny_facts(), out, steps=STEPS, phases=PHASES, min_prompts=2, common_shares=(0.4,),
                common_scopes=("relation",), progress=False)
    t = again.specificity
    assert set(t.scope) == {"none", "relation"} and set(t.share.dropna()) == {0.4}
    assert json.loads((out / "config.json").read_text())["settings"]["specificity"]["common_shares"] == [0.4]


def test_settings_refused_with_the_name():
    from kn.runs.phases.specificity import SpecificitySettings

    with pytest.raises(kn.checks.ArgumentError, match="common_shares"):
        SpecificitySettings(common_shares=(0.0,))
    with pytest.raises(kn.checks.ArgumentError, match="common_scopes"):
        SpecificitySettings(common_scopes=("world",))


def test_readings_say_the_goal():
    t = pd.DataFrame({"scope": ["none", "relation", "run"], "share": [math.nan, .1, .1], "facts": [9] * 3,
                      "neurons": [7., 2., 1.], "emptied": [0., .2, .5], "fact": [-.96, -.7, -.3],
                      "other": [-.38, -.03, 0.], "same": [-.88, -.2, -.1]})
    t["meets"] = (t.other.abs() <= .05) & (t.fact <= -.5)
    text = S.readings(t)
    assert "Goal met" in text and "relation > 10% dropped" in text and "-70%" in text
    text = S.readings(t.assign(meets=False).assign(fact=[-.96, -.4, -.3]))
    assert "No condition meets" in text and "run > 10% dropped" in text


def test_figure_draws_every_condition(result):
    from kn.figures import specificity_figure

    s = S.summarize(result.specificity)
    fig = specificity_figure({"a": s, "b": s})
    ax = fig.axes[0]
    assert len(fig.axes) == 2 and len(ax.lines) == 2 * 3 + 3  # fact / other / same per scope, 3 raw lines
    scope_line = next(l for l in ax.lines if l.get_label() == "other (relation)")
    assert list(scope_line.get_ydata()) == pytest.approx(list(s[s.scope == "relation"].sort_values("share").other * 100))
