"""Degenerate knowledge neurons: a planted redundant pair is found exactly, independent neurons give
none, and the batched suppression equals `kn.suppress` one set at a time."""
import random

import pandas as pd
import pytest
import torch

import kn
from kn import degenerate as D
from kn.testing import tiny_lm

from test_attribution import answer_direction, prompt_of

FAMILIES = ["GPT-2", "BERT", "Llama"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


def plant_redundant(lm, layer=1, strength=1e6):
    """The two most active neurons of `layer` both write the answer's direction, each strongly enough
    to carry it alone: (a, b)."""
    act = kn.activations(lm, prompt_of(lm), "France")[layer]
    a, b = (int(i) for i in act.abs().topk(2).indices)
    d = answer_direction(lm, layer)
    with torch.no_grad():
        for i in (a, b):
            lm.value_slots(layer)[i] = strength * torch.sign(act[i]) * d / act[i].abs()
    return (layer, a), (layer, b)


def by_hand(lm, prompt, answer, neurons):
    with kn.suppress(lm, neurons):
        return kn.answer_prob(lm, prompt, answer)


@pytest.mark.parametrize("family", FAMILIES)
def test_planted_redundant_pair_is_found_exactly(family):
    lm = tiny_lm(family, initializer_range=0.2)
    a, b = plant_redundant(lm)
    p = prompt_of(lm)
    p0 = kn.answer_prob(lm, p, "France")
    assert by_hand(lm, p, "France", [a]) >= 0.8 * p0 and by_hand(lm, p, "France", [b]) >= 0.8 * p0
    assert by_hand(lm, p, "France", [a, b]) < 0.75 * p0
    cands = D.top_neurons(lm, p, "France", 20)
    assert {a, b} <= set(cands)
    (found,) = D.degenerate_pairs(lm, p, "France", cands)
    assert set(found) == {a, b}
    assert D.degenerate_pairs(lm, p, "France") == [found]  # candidates=None: the top-20 by IG
    found_sets = D.degenerate_sets(lm, p, "France", cands, max_size=3)
    assert {a, b} in [set(x) for x in found_sets] and not any({a, b} < set(x) for x in found_sets)  # minimal
    for x in found_sets:  # each one by the definition, one suppression at a time
        assert by_hand(lm, p, "France", list(x)) < 0.75 * p0
        assert all(by_hand(lm, p, "France", [n]) >= 0.8 * p0 for n in x)
        assert all(by_hand(lm, p, "France", [n for n in x if n != m]) >= 0.75 * p0 for m in x if len(x) > 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_independent_neurons_give_no_pair(family):
    # two planted neurons that each carry half the push: switching either off already drops the fact
    lm = tiny_lm(family, initializer_range=0.2)
    p = prompt_of(lm)
    act = kn.activations(lm, p, "France")[1]
    a, b = (int(i) for i in act.abs().topk(2).indices)
    d = answer_direction(lm, 1)
    for strength in (1.5 ** k for k in range(40)):
        with torch.no_grad():
            for i in (a, b):
                lm.value_slots(1)[i] = strength * torch.sign(act[i]) * d / act[i].abs()
        p0 = kn.answer_prob(lm, p, "France")
        if by_hand(lm, p, "France", [(1, a)]) < 0.7 * p0:
            break
    else:
        pytest.fail("could not plant two independent neurons")
    assert D.degenerate_pairs(lm, p, "France", [(1, a), (1, b)]) == []


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("answer", ["France", "in France"])
def test_batched_equals_one_at_a_time(family, answer):
    lm = tiny_lm(family)
    p = prompt_of(lm) if answer == "France" else ("Paris is located [MASK] ." if lm.masked else "Paris is located")
    rng = random.Random(0)
    sets = [[]] + [[(rng.randrange(lm.n_layers), rng.randrange(lm.width)) for _ in range(rng.randrange(1, 6))]
                   for _ in range(12)]
    sets.append([(l, i) for l in range(lm.n_layers) for i in range(0, lm.width, 3)])
    D.ROW_TOKENS, saved = 20, D.ROW_TOKENS  # several passes of a few rows each
    try:
        batched = D.suppressed_probs(lm, p, answer, sets)
    finally:
        D.ROW_TOKENS = saved
    for s, q in zip(sets, batched):
        assert abs(q - by_hand(lm, p, answer, s)) < 1e-6 * max(1.0, q), s


def test_pairs_are_sets_of_two():
    lm = tiny_lm("GPT-2", initializer_range=0.2)
    plant_redundant(lm)
    p = prompt_of(lm)
    cands = D.top_neurons(lm, p, "France", 12)
    assert [set(x) for x in D.degenerate_pairs(lm, p, "France", cands)] == \
        [set(x) for x in D.degenerate_sets(lm, p, "France", cands, max_size=2)]
    with pytest.raises(ValueError, match="max_size"):
        D.degenerate_sets(lm, p, "France", cands, max_size=1)
    with pytest.raises(ValueError, match="single"):
        D.degenerate_pairs(lm, p, "France", cands, single=1.5)


def test_fact_pairs_by_hand():
    a, b, c = (1, 1), (2, 2), (3, 3)
    prompts = [[(a, b), (b, c)], [(b, a)], [(a, b), (a, c)], [(c, b), (b, c)]]
    assert D.fact_pairs(prompts, share=0.5) == [(a, b), (b, c)]  # 3 and 2 of 4 prompts; (a, c) once
    assert D.fact_pairs(prompts, share=0.75) == [(a, b)]
    assert D.fact_pairs([[(a, c)]], share=0.5) == [(a, c)]


def test_run_phase_finds_each_facts_pairs_and_resumes(tmp_path):
    import json

    from kn.runs import JOURNAL, load_run, run
    from test_run import tiny_facts

    lm = tiny_lm("GPT-2", initializer_range=0.2)
    plant_redundant(lm)
    kw = dict(steps=3, phases=("locate", "degenerate"), dkn_candidates=8, dkn_share=0.5, progress=False)
    res = run(lm, tiny_facts(), tmp_path / "a", **kw)
    assert "dkn_pairs" in res.facts and res.facts.dkn_pairs.notna().sum() == res.facts.n_neurons.notna().sum()
    # one fact by hand: each prompt's pairs among its top-8 neurons, kept if on >= half of the prompts
    fid = res.located_facts()[0]
    queries = res.fact_queries(fid)
    per = [D.degenerate_pairs(lm, p, a, D.top_neurons(lm, p, a, 8)) for p, a in queries]
    want = D.fact_pairs(per, 0.5)
    got = res.degenerate_pairs[res.degenerate_pairs.fact_id == fid]
    assert sorted(((r.layer_a, r.index_a), (r.layer_b, r.index_b)) for r in got.itertuples()) == want
    # a journal written before the locate phase kept its top neurons: the phase recomputes them
    recs = [json.loads(l) for l in (res.out_dir / JOURNAL).read_text().splitlines()]
    old = tmp_path / "b"
    old.mkdir()
    (old / "config.json").write_text((res.out_dir / "config.json").read_text())
    (old / JOURNAL).write_text("".join(json.dumps({k: v for k, v in r.items() if k != "top"}) + "\n"
                                       for r in recs if r["type"] != "degenerate"))
    again = run(lm, tiny_facts(), old, **kw)
    assert again.degenerate_pairs.equals(res.degenerate_pairs)
    assert load_run(old).facts.dkn_pairs.equals(res.facts.dkn_pairs)


def test_cumulative_and_pair_effects_equal_one_at_a_time():
    lm = tiny_lm("GPT-2", initializer_range=0.2)
    a, b = plant_redundant(lm)
    p, ans = prompt_of(lm), "France"
    order = [a, (0, 3), b, (2, 5)]
    got = D.cumulative(lm, p, ans, order)
    want = [by_hand(lm, p, ans, order[:k]) if k else kn.answer_prob(lm, p, ans) for k in range(5)]
    assert got == pytest.approx(want, rel=1e-5)
    t = D.pair_effects(lm, [(p, ans)], [(a, b), ((0, 3), (2, 5))])
    assert len(t) == 2 and t.p0.tolist() == pytest.approx([want[0]] * 2, rel=1e-5)
    for r in t.itertuples():
        assert (r.a_off, r.b_off, r.both_off) == pytest.approx(
            (by_hand(lm, p, ans, [r.a]), by_hand(lm, p, ans, [r.b]), by_hand(lm, p, ans, [r.a, r.b])), rel=1e-5)
    planted = t.iloc[0]  # the planted pair: each alone keeps the fact, both off remove it
    assert planted.a_off > 0.8 * planted.p0 and planted.b_off > 0.8 * planted.p0 and planted.both_off < 0.75 * planted.p0


def test_degeneracy_phase_measures_what_its_definition_says(tmp_path):
    """The phase's tables against the definitions, one suppression at a time: each pair's effects on
    each prompt, the curve of the top neurons going off, and the sets of the first fact per relation."""
    from kn.runs import run
    from test_run import tiny_facts

    lm = tiny_lm("GPT-2", initializer_range=0.2)
    plant_redundant(lm)
    # a loose pair rule (alone: anything; together: any drop), so that the tiny model has sets to find
    kw = dict(steps=3, phases=("locate", "degenerate", "degeneracy"), dkn_candidates=6, dkn_share=0.5,
              dkn_single=1.0, dkn_pair=0.0, progress=False)
    res = run(lm, tiny_facts(), tmp_path / "a", dkn_sets_per_relation=1, dkn_max_size=3, **kw)
    pairs, effects, curves, sets = res.degenerate_pairs, res.pair_effects, res.curves, res.degenerate_sets
    measured = res.facts[res.facts.dkn_pairs.notna()].fact_id.tolist()
    assert measured and sorted(curves.fact_id.unique()) == sorted(measured)
    for fid in measured:
        queries = res.fact_queries(fid)
        mine = pairs[pairs.fact_id == fid]
        e = effects[effects.fact_id == fid]
        assert len(e) == len(mine) * len(queries)
        for r in e.itertuples():
            (p, ans), = [(q, a) for q, a in queries if q == r.prompt]
            a, b = tuple(r.a), tuple(r.b)
            assert (r.p0, r.a_off, r.b_off, r.both_off) == pytest.approx(
                (kn.answer_prob(lm, p, ans), by_hand(lm, p, ans, [a]), by_hand(lm, p, ans, [b]),
                 by_hand(lm, p, ans, [a, b])), rel=1e-4)
        p, ans = queries[0]
        # the first prompt's top 6, scored as locate scores the fact's prompts: together (stacked passes,
        # whose float32 sums can reorder a near tie of this random model against kn.scores alone)
        first = kn.attribution.batch_scores(lm, [q for q, _ in queries], [a for _, a in queries], kn.IG(steps=3))[0]
        order = [(l, i) for l, i, _ in kn.localization.top(first, 6)]
        p0 = kn.answer_prob(lm, p, ans)
        c = curves[curves.fact_id == fid].sort_values("k")
        want = [by_hand(lm, p, ans, order[:k]) / p0 if k else 1.0 for k in range(7)]
        assert c.k.tolist() == list(range(7)) and c.p_ratio.tolist() == pytest.approx(want, rel=1e-4)
        first = res.located_facts(res.fact_relation(fid))[0]
        got = sorted(sorted(map(tuple, x)) for x in sets[sets.fact_id == fid].neurons)
        if fid == first:
            assert got == sorted(sorted(x) for x in D.degenerate_sets(lm, p, ans, order, single=1.0, drop=0.0,
                                                                      max_size=3))
        else:
            assert got == []
    # its settings are the records' key: no sets searched now, and the same curves measured again
    again = run(lm, tiny_facts(), tmp_path / "a", dkn_sets_per_relation=0, dkn_max_size=3, **kw)
    assert len(res.degenerate_sets) > 0 and len(again.degenerate_sets) == 0 and len(again.curves) == len(res.curves)
    pd.testing.assert_frame_equal(again.curves, res.curves)
