"""kn.agreement on hand-built run tables: per-fact Jaccard and recall, the summary, the fast default."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from kn import agreement as A


def _run(sets: dict, sup: dict, amp: dict, seconds: float):
    facts = pd.DataFrame({"fact_id": list(sets), "relation": ["r"] * len(sets),
                          "n_neurons": [float(len(s)) for s in sets.values()],
                          "suppression": [sup[f] for f in sets], "amplification": [amp[f] for f in sets],
                          "seconds": [seconds] * len(sets)})
    neurons = pd.DataFrame([{"fact_id": f, "layer": l, "index": i} for f, s in sets.items() for l, i in s])
    return {"facts": facts, "neurons": neurons}


REF = _run({"a": {(1, 1), (1, 2)}, "b": {(2, 5)}, "c": set()}, {"a": -.8, "b": -.6, "c": math.nan},
           {"a": .4, "b": .2, "c": math.nan}, 10.0)


def test_per_fact_by_hand():
    cand = _run({"a": {(1, 1), (3, 3)}, "b": {(2, 5)}, "c": {(0, 0)}}, {"a": -.5, "b": -.6, "c": -.1},
                {"a": .3, "b": .2, "c": 0}, 2.0)
    d = A.per_fact(REF, cand).set_index("fact_id")
    assert list(d.index) == ["a", "b"]  # c has no reference neurons
    assert d.loc["a", "jaccard"] == pytest.approx(1 / 3) and d.loc["a", "recall"] == 0.5
    assert d.loc["b", "jaccard"] == 1.0 and d.loc["a", "suppression"] == -.5
    # a recording read back from CSV has integer counts when no fact lacks them
    ints = {k: v.astype({"n_neurons": "int64"}) if k == "facts" else v for k, v in cand.items()}
    assert A.per_fact(REF, ints).fact_id.tolist() == ["a", "b"]
    unlocated = {k: v.assign(n_neurons=[2.0, math.nan, 1.0]) if k == "facts" else v for k, v in cand.items()}
    assert A.per_fact(REF, unlocated).fact_id.tolist() == ["a"]  # b not located in the candidate


def test_summary_and_the_fast_default():
    same = _run({"a": {(1, 1), (1, 2)}, "b": {(2, 5)}}, {"a": -.8, "b": -.62}, {"a": .41, "b": .2}, 4.0)
    off = _run({"a": {(1, 1)}, "b": {(9, 9)}}, {"a": -.2, "b": -.1}, {"a": .1, "b": .0}, 1.0)
    s = A.summary(REF, {"paper": REF, "close": same, "cheap": off}).set_index("setting")
    assert s.loc["paper", "agrees"] and s.loc["paper", "speedup"] == 1.0 and s.loc["paper", "effect_distance"] == 0
    assert s.loc["close", "agrees"] and s.loc["close", "speedup"] == 2.5
    assert s.loc["close", "effect_distance"] == pytest.approx(0.005 / 0.3)  # amplification: .305 against .3
    assert not s.loc["cheap", "agrees"] and s.loc["cheap", "jaccard_median"] == pytest.approx(0.25)
    assert A.fast_default(s.reset_index()).setting == "close"
    assert A.fast_default(s.reset_index()[lambda t: t.setting == "cheap"]) is None


def test_a_fact_the_candidate_finds_no_neuron_for_counts_at_jaccard_zero():
    # b: located, but no neuron found, so no effects; its Jaccard 0 still counts: median of (1, 0) = 0.5
    empty_b = _run({"a": {(1, 1), (1, 2)}, "b": set()}, {"a": -.8, "b": math.nan}, {"a": .4, "b": math.nan}, 5.0)
    row = A.summary(REF, {"x": empty_b}).iloc[0]
    assert (row.facts, row.facts_with_effects) == (2, 1)
    assert row.jaccard_median == 0.5 and row.recall_median == 0.5 and not row.agrees
    assert row.suppression == -.8 and row.suppression_reference == -.8  # effects over a alone


def test_readings_and_layer_shares_by_hand():
    same = _run({"a": {(1, 1), (1, 2)}, "b": {(2, 5)}}, {"a": -.8, "b": -.62}, {"a": .41, "b": .2}, 4.0)
    off = _run({"a": {(1, 1)}, "b": {(3, 9)}}, {"a": -.2, "b": -.1}, {"a": .1, "b": .0}, 1.0)
    s = A.summary(REF, {"paper": REF, "close": same, "cheap": off})
    text = A.readings(s, "m")
    # close: 10 s / 4 s = 2.5x, Jaccard 1 on both facts, amplification .305 against .3 (1.7%)
    assert text.startswith("On m, 1 of 2 cheaper settings agree with the paper's; the cheapest with float32 weights, "
                           "`close`, is the fast default: 2.5x the paper setting's speed, median Jaccard 1.00 (mean 1.00), mean effects 2% off.")
    # cheap: a has 1 of the reference's 2 (J 1/2), b none of 1 (J 0): median 0.25; recall median 0.25
    assert "Of the 1 that do not, the closest is `cheap` (10.0x): median Jaccard 0.25, recall of the paper's " \
           "neurons 0.25" in text
    assert "stays the default" in A.readings(s[s.setting != "close"], "m")
    assert A.readings(s[s.setting == "paper"], "m") == "On m, only the paper's setting is recorded so far."
    shares = A.layer_shares({"paper": REF, "cheap": off}, 4)
    assert shares.loc["paper"].tolist() == [0.0, 2 / 3, 1 / 3, 0.0] and shares.loc["cheap"].tolist() == [0, .5, 0, .5]


def test_the_fast_defaults_are_what_the_recorded_study_picks(repo_root):
    """kn.fast_settings.FAST holds, per model, the cheapest float32 setting of the recorded agreement study
    that agrees with the paper's (its recorded attribution); a model whose study picks none has no entry."""
    from kn import recording
    from kn.fast_settings import FAST

    studied = {}
    for d in sorted((repo_root / "book" / "results" / "agreement").glob("*")):
        runs = {p.parent.name: recording.read(p.parent) for p in sorted(d.glob("*/provenance.json"))}
        float32 = {n: r for n, r in runs.items() if r.provenance["run_config"]["model"]["dtype"] == "torch.float32"}
        if "paper" in float32 and len(float32) > 1:
            studied[d.name] = (A.fast_default(A.summary(float32["paper"], float32)), float32)
    assert set(FAST) <= set(studied), "a fast default without a recorded study"
    for model, (pick, runs) in studied.items():
        if pick is None or pick.setting == "paper":
            assert model not in FAST
            continue
        att = runs[pick.setting].provenance["run_config"]["settings"]["attribution"]
        fast = FAST[model]
        assert fast.setting == pick.setting and (att["rule"], att["steps"], att.get("screen")) == (fast.rule, fast.steps, fast.screen)


def test_kn_run_fast_takes_the_models_default_and_refuses_a_rule_beside_it():
    import argparse

    from kn import checks, cli
    from kn.fast_settings import FAST

    model, fast = next(iter(FAST.items()))
    args = argparse.Namespace(model=model, method="ig", steps=None, rule=None, baseline=None, multiplier=None,
                              screen=None, head_dtype=None, fast=True)
    got = cli.attribution(args)
    assert (got.rule, got.steps, got.screen) == (fast.rule, fast.steps, fast.screen) and got.baseline == "zero"
    with pytest.raises(ValueError, match="leave out --steps"):
        cli.attribution(argparse.Namespace(**{**vars(args), "steps": 4}))
    with pytest.raises(ValueError, match="leave out --method"):
        cli.attribution(argparse.Namespace(**{**vars(args), "method": "gradxact"}))
    with pytest.raises(checks.ArgumentError, match="no fast default is measured for 'gpt2'"):
        cli.attribution(argparse.Namespace(**{**vars(args), "model": "gpt2"}))


def test_the_fast_default_is_the_cheapest_float32_setting_a_bfloat16_one_is_said_beside_it():
    import types

    same = _run({"a": {(1, 1), (1, 2)}, "b": {(2, 5)}}, {"a": -.8, "b": -.62}, {"a": .41, "b": .2}, 4.0)
    bf16 = types.SimpleNamespace(**_run({"a": {(1, 1), (1, 2)}, "b": {(2, 5)}}, {"a": -.8, "b": -.6},
                                        {"a": .4, "b": .2}, 2.0),
                                 provenance={"run_config": {"model": {"dtype": "torch.bfloat16"}}})
    s = A.summary(REF, {"paper": REF, "close": same, "close-bf16": bf16})
    assert s.set_index("setting").dtype.to_dict() == {"paper": "float32", "close": "float32", "close-bf16": "bfloat16"}
    assert A.fast_default(s).setting == "close" and A.fast_default(s, dtype=None).setting == "close-bf16"
    assert "With bfloat16 weights (`--dtype`), `close-bf16` agrees too, at 5.0x (median Jaccard 1.00, effects 0% off)." \
        in A.readings(s, "m")
