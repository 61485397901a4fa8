"""kn.editing's experiments as run phases ("update", "erase") on a tiny GPT-2 with planted facts.

Oracles are independent of kn.editing: the numbers are recomputed on a deep copy of the model whose
value slots (GPT-2: rows of the Conv1D c_proj weight) the test edits or zeroes itself, with a plain
softmax over the full logits.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import shutil

import pandas as pd
import pytest
import torch

import kn
from kn import editing
from kn.data.schema import Fact, FactSet
from kn.data.templates import Continuation
from kn.testing import tiny_lm

# fact id -> (relation, template, subject, answer); the causal prompt is the template cut before [Y]
FACTS = {"a": ("r1", "the capital of [X] is [Y]", "France", "Paris"),
         "b": ("r1", "[X] is the capital of [Y]", "Tokyo", "Japan"),
         "c": ("r2", "[X] speaks [Y]", "Italy", "Italian")}
PROMPTS = {f: t.replace("[X]", s).replace(" [Y]", "") for f, (_, t, s, _) in FACTS.items()}
ANSWERS = {f: a for f, (*_, a) in FACTS.items()}


def _token(tok, answer: str) -> int:
    return tok(" " + answer.strip(), add_special_tokens=False).input_ids[0]


def _plant(lm) -> None:
    """Each fact's answer made top-1 through the last layer's 3 most active neurons at its prompt (disjoint):
    their value slots are written along the answer's (tied) embedding."""
    last = lm.n_layers - 1
    slots = lm.model.transformer.h[last].mlp.c_proj.weight  # Conv1D [width, hidden]: row i = neuron i
    emb = lm.model.get_input_embeddings().weight
    taken, mine = [], {}
    for fid, prompt in PROMPTS.items():
        act = kn.activations(lm, prompt, ANSWERS[fid])[last]
        act[taken] = -math.inf  # each fact its own neurons
        top = act.topk(3).indices.tolist()
        assert (act[top] > 0).all()
        e = emb[_token(lm.tokenizer, ANSWERS[fid])].detach()
        with torch.no_grad():
            slots[top] = 50 * e / e.norm() / act[top, None]  # 150 e/|e| at its own prompt
        taken += top
        mine[fid] = top
    for _ in range(6):  # facts interfere: strengthen the ones whose answer is not top-1 yet
        weak = [f for f in PROMPTS if kn.answer_rank(lm, PROMPTS[f], ANSWERS[f]) != 0]
        with torch.no_grad():
            for f in weak:
                slots[mine[f]] *= 2
    assert not weak, f"planting failed for {weak}"


PHASES = ("locate", "update", "erase")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny GPT-2 that knows three planted facts, and a real kn run over them (one prompt each) with
    the editing phases (a strong update, lambda2 = 200); the model's weights before the run."""
    torch.set_num_threads(1)
    lm = tiny_lm("GPT-2", initializer_range=0.2)
    _plant(lm)
    weights = {k: v.clone() for k, v in lm.model.state_dict().items()}
    res = kn.run(lm, FACTSET, tmp_path_factory.mktemp("run"), steps=4, min_prompts=1, phases=PHASES, lambda2=200.0,
                 progress=False)
    assert res.complete and res.error_free_facts() == ["a", "b", "c"]
    assert all(res.fact_neurons(f) for f in FACTS), res.neurons
    return lm, res, weights


FACTSET = FactSet([Fact(f, rel, {"en": s}, {"en": a}, {"en": [t]}) for f, (rel, t, s, a) in FACTS.items()], "planted")
ITEMS = {f: [(PROMPTS[f], Continuation(" " + ANSWERS[f]))] for f in FACTS}
RELATION = {f: r for f, (r, *_) in FACTS.items()}


def _plan(lm, res, fid, seed=0, side_facts=5):
    return editing.plan_update(lm, fid, res.fact_neurons(fid), ITEMS, RELATION, side_facts=side_facts, seed=seed)


def _oracle(model, tok, items):
    """(accuracy, perplexity) by plain forward passes over the whole sequence (single-token answers)."""
    hits, nll = 0, 0.0
    for prompt, answer in items:
        ids = tok(prompt, return_tensors="pt").input_ids
        gold = _token(tok, answer)
        with torch.no_grad():
            p = torch.softmax(model(ids).logits[0, -1], -1)
        hits += int(p.argmax()) == gold
        nll -= math.log(p[gold].item())
    return hits / len(items), math.exp(nll / len(items))


def _per_item(model, tok, items):
    """Per item: P(answer) and whether the answer is top-1, by plain forward passes."""
    probs, tops = [], []
    for prompt, answer in items:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            p = torch.softmax(model(ids).logits[0, -1], -1)
        gold = _token(tok, answer)
        probs.append(max(p[gold].item(), 1e-30))
        tops.append(int(p.argmax()) == gold)
    return probs, tops


def _hand_edited(lm, neurons, old: str, new: str, lambda1: float, lambda2: float):
    """A deep copy of the model with the paper's update written into the neurons' value slots by hand."""
    model = copy.deepcopy(lm.model)
    emb = model.get_input_embeddings().weight
    e_old, e_new = emb[_token(lm.tokenizer, old)].detach(), emb[_token(lm.tokenizer, new)].detach()
    with torch.no_grad():
        for l, i in neurons:
            slot = model.transformer.h[l].mlp.c_proj.weight[i]
            size = slot.norm()
            slot -= lambda1 * size / e_old.norm() * e_old - lambda2 * size / e_new.norm() * e_new
    return model


def test_update_phase_moves_the_answer_and_restores_the_model(planted):
    lm, res, weights = planted
    df = res.updates
    assert list(df.columns) == editing.UPDATE_COLUMNS[:1] + ["language"] + editing.UPDATE_COLUMNS[1:]
    # r1 has two facts: each is edited towards the other's answer; r2 has no second object: no edit
    assert sorted(df.fact_id) == ["a", "b"]
    for row in df.itertuples():
        assert row.old == ANSWERS[row.fact_id] and row.new == ANSWERS["b" if row.fact_id == "a" else "a"]
        assert row.success == 1.0 and row.changed == 1.0  # a strong edit through the fact's own neurons
        assert row.n_neurons == len(res.fact_neurons(row.fact_id))  # planted neurons are not shared
    assert res.relations.set_index("relation").loc["r1", "edit_success"] == 1.0
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_plan_update_is_seeded_per_fact_and_draws_controls_in_the_same_layers(planted):
    lm, res, _ = planted
    plan = [_plan(lm, res, f) for f in ("a", "b")]
    assert plan == [_plan(lm, res, f) for f in ("a", "b")]
    assert [u.random_neurons for u in plan] != [_plan(lm, res, f, seed=1).random_neurons for f in ("a", "b")]
    for u in plan:
        assert u.neurons == tuple(res.fact_neurons(u.fact_id)) and u.prompts == ((PROMPTS[u.fact_id], " " + u.old),)
        assert {l for l, _ in u.random_neurons} == {l for l, _ in u.neurons}
        assert 1 <= len(u.random_neurons) <= len(u.neurons)
        other = "b" if u.fact_id == "a" else "a"
        assert u.intra == ((PROMPTS[other], " " + ANSWERS[other]),) and u.inter == ((PROMPTS["c"], " " + ANSWERS["c"]),)
    assert _plan(lm, res, "c") is None  # r2 has no other object
    assert _plan(lm, res, "a", side_facts=0).intra == ()
    # a neuron shared by more than max_share of the relation's facts is left out, unless it is the fact's alone
    counts = {(0, 1): 2, (0, 2): 1, (1, 3): 1}
    assert editing.edit_neurons([(0, 1), (0, 2)], counts, 2, max_share=1.0) == [(0, 1), (0, 2)]
    assert editing.edit_neurons([(0, 1), (0, 2)], counts, 2, max_share=0.1) == [(0, 2)]
    assert editing.update_order(["x", "y", "z"], "r", 0) == editing.update_order(["z", "y", "x"], "r", 0)


# a fixed set where objects repeat (b and b2 are Japan, d and d2 Italy): new_fact has a choice to make
SHARED = {**ITEMS, "b2": [("Tokyo is the capital of", Continuation(" Japan"))],
          "d": [("Rome is the capital of", Continuation(" Italy"))],
          "d2": [("Madrid is the capital of", Continuation(" Italy"))],
          "c2": [("Germany speaks", Continuation(" German"))]}
SHARED_RELATION = {**RELATION, "b2": "r1", "d": "r1", "d2": "r1", "c2": "r2"}


def _draws_before_new_fact(lm, fid, neurons, items, relation_of, side_facts, seed):
    """plan_update's draws as kn wrote them before Update.new_fact (copied from 37b1628): (old, new,
    prompts, intra, inter, random neurons), or None."""
    rel = relation_of[fid]
    right = [x for x, (_, rank) in zip(items[fid], kn.probing.batch_stats(lm, items[fid])) if rank == 0]
    if not right or not neurons:
        return None
    rng = __import__("random").Random(f"{seed}|update|{fid}")
    others = sorted(f for f in items if f != fid and relation_of[f] == rel)
    first = editing._first_token(lm, *right[0])
    news = [editing.run_object(items[f]) for f in others
            if editing._first_token(lm, right[0][0], kn.data.templates.with_object(right[0][1], items[f][0][1])) != first]
    if not news:
        return None
    new = rng.choice(sorted(set(news)))
    intra = [x for f in rng.sample(others, min(side_facts, len(others))) for x in items[f]]
    other_rel = sorted(f for f in items if relation_of[f] != rel)
    inter = [x for f in rng.sample(other_rel, min(side_facts, len(other_rel))) for x in items[f]]
    rand = sorted({(l, rng.randrange(lm.width)) for l, _ in neurons})
    return editing.run_object(items[fid]), new, tuple(right), tuple(intra), tuple(inter), tuple(rand)


def test_new_fact_leaves_every_draw_of_a_plan_as_it_was(planted):
    """Update.new_fact (the first fact, sorted, with the drawn object) is no draw: on a fixed set with
    repeated objects, every plan's fields are what plan_update drew before it, over seeds and side facts."""
    lm, res, _ = planted
    seen = set()
    for seed in range(12):
        for side in (0, 1, 5):
            for fid in ("a", "b", "c"):
                u = editing.plan_update(lm, fid, res.fact_neurons(fid), SHARED, SHARED_RELATION, side_facts=side, seed=seed)
                was = _draws_before_new_fact(lm, fid, res.fact_neurons(fid), SHARED, SHARED_RELATION, side, seed)
                got = None if u is None else (u.old, u.new, u.prompts, u.intra, u.inter, u.random_neurons)
                assert got == was, (seed, side, fid)
                if u is None:
                    continue
                same = sorted(f for f, xs in SHARED.items() if f != fid and SHARED_RELATION[f] == u.relation
                              and editing.run_object(xs) == u.new)
                assert u.new_fact == same[0] and editing.run_object(SHARED[u.new_fact]) == u.new
                seen.add((fid, u.new, len(same)))
    assert {n for _, _, n in seen} == {1, 2}  # drawn objects with one fact and with two
    assert {new for fid, new, _ in seen if fid == "a"} == {"Japan", "Italy"}  # a's draw varies with the seed
    assert editing.Update("r", "f", "x", "y", (), (), (), (), ()).new_fact is None  # the field's default


def test_measure_update_against_a_hand_edited_copy(planted):
    lm, res, _ = planted
    u = _plan(lm, res, "a")
    row = editing.measure_update(lm, u, lambda1=1.0, lambda2=8.0)
    tok = lm.tokenizer
    assert math.isclose(row["intra_ppl_before"], _oracle(lm.model, tok, u.intra)[1], rel_tol=1e-4)
    assert math.isclose(row["inter_ppl_before"], _oracle(lm.model, tok, u.inter)[1], rel_tol=1e-4)
    for tag, neurons in (("", u.neurons), ("random_", u.random_neurons)):
        edited = _hand_edited(lm, neurons, u.old, u.new, 1.0, 8.0)
        new_acc = _oracle(edited, tok, [(p, u.new) for p, _ in u.prompts])[0]
        old_acc = _oracle(edited, tok, [(p, u.old) for p, _ in u.prompts])[0]
        assert row[f"{tag}success"] == new_acc and row[f"{tag}changed"] == 1 - old_acc, tag
        if not tag:
            acc, ppl = _oracle(edited, tok, u.intra)
            assert row["intra_acc_after"] == acc and math.isclose(row["intra_ppl_after"], ppl, rel_tol=1e-4)
            acc, ppl = _oracle(edited, tok, u.inter)
            assert row["inter_acc_after"] == acc and math.isclose(row["inter_ppl_after"], ppl, rel_tol=1e-4)
            for side in ("intra", "inter"):  # the collateral, from the two models' own probabilities
                (b_p, b_top), (a_p, a_top) = _per_item(lm.model, tok, getattr(u, side)), _per_item(edited, tok, getattr(u, side))
                shift = max(abs(math.log10(a) - math.log10(b)) for a, b in zip(a_p, b_p))
                assert math.isclose(row[f"{side}_max_shift"], shift, rel_tol=1e-3, abs_tol=1e-6)
                assert row[f"{side}_flipped"] == sum(x != y for x, y in zip(a_top, b_top)) / len(a_top)
            assert row["intra_max_shift"] > 0.01  # a strong edit moves its relation's other fact


def test_erase_phase_against_a_hand_erased_copy(planted):
    lm, res, _ = planted
    df = res.erased
    assert list(df.columns) == editing.ERASE_COLUMNS[:1] + ["language"] + editing.ERASE_COLUMNS[1:] and sorted(df.relation) == ["r1", "r2"]
    row = df.set_index("relation").loc["r1"]
    neurons = sorted({n for f in ("a", "b") for n in res.fact_neurons(f)})
    assert row.n_neurons == len(neurons)  # k = 20 > the relation's distinct neurons: all of them
    copy_ = copy.deepcopy(lm.model)
    with torch.no_grad():  # GPT-2's Conv1D c_proj weight is [width, hidden]: row i is neuron i's slot
        for l, i in neurons:
            copy_.transformer.h[l].mlp.c_proj.weight[i] = 0
    mine = [(PROMPTS[f], ANSWERS[f]) for f in ("a", "b")]
    rest = [(PROMPTS["c"], ANSWERS["c"])]
    acc_b, ppl_b = _oracle(lm.model, lm.tokenizer, mine)
    acc_a, ppl_a = _oracle(copy_, lm.tokenizer, mine)
    oacc_b, oppl_b = _oracle(lm.model, lm.tokenizer, rest)
    oacc_a, oppl_a = _oracle(copy_, lm.tokenizer, rest)
    assert row.acc_before == acc_b == 1.0
    assert math.isclose(row.ppl_before, ppl_b, rel_tol=1e-4)
    assert row.other_acc_before == oacc_b and math.isclose(row.other_ppl_before, oppl_b, rel_tol=1e-4)
    assert row.acc_after == acc_a and math.isclose(row.ppl_after, ppl_a, rel_tol=1e-4)
    assert row.other_acc_after == oacc_a and math.isclose(row.other_ppl_after, oppl_a, rel_tol=1e-4)
    assert row.ppl_after > row.ppl_before  # zeroing the most active neurons hurts the relation
    two = editing.plan_erasure("r1", [res.fact_neurons(f) for f in ("a", "b")], mine, rest, k=2)
    counts = res.relation_neuron_counts("r1")  # the most frequent: no other neuron serves more facts
    assert len(set(two.neurons)) == 2 and set(two.neurons) <= set(counts)
    assert min(counts[n] for n in two.neurons) >= max(c for n, c in counts.items() if n not in two.neurons)


CHANGED = {"lambda1": 3.0, "lambda2": 8.0, "update_max_share": 0.5, "update_side_facts": 0, "edits_per_relation": 1,
           "erase_k": 1}


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_a_changed_editing_setting_recomputes_what_it_invalidates(planted, tmp_path, name):
    """Resuming the finished run with one editing setting changed: the records that depend on it are
    made anew, the tables follow; a table-scoped setting makes no record anew."""
    from kn.runs.phases import PHASES as ALL
    from kn.runs.phases.setting import scoped

    assert set(CHANGED) == {f for p in ("update", "erase") for f in {**scoped(ALL[p].Settings(), "fact"),
                                                                     **scoped(ALL[p].Settings(), "table")}}
    lm, res, _ = planted
    out = tmp_path / "run"
    shutil.copytree(res.out_dir, out)
    lines = (out / "journal.jsonl").read_text().splitlines()
    again = kn.run(lm, FACTSET, out, steps=4, min_prompts=1, phases=PHASES, lambda2=200.0, progress=False,
                   **{name: CHANGED[name]} if name != "lambda2" else {})
    new = [json.loads(x)["type"] for x in (out / "journal.jsonl").read_text().splitlines()[len(lines):]]
    if name == "lambda2":  # lambda2 = 200 as before and then 8: the same call again is a no-op
        assert new == []
        again = kn.run(lm, FACTSET, out, steps=4, min_prompts=1, phases=PHASES, lambda2=8.0, progress=False)
        new = [json.loads(x)["type"] for x in (out / "journal.jsonl").read_text().splitlines()[len(lines):]]
    owner = "erase" if name == "erase_k" else "update"
    expected = {"edits_per_relation": set(), "erase_k": {"erasure"}}.get(name, {"update"})
    assert set(new) == expected, new
    table = again.erased if owner == "erase" else again.updates
    before = res.erased if owner == "erase" else res.updates
    if name == "update_max_share":  # every planted neuron is one fact's alone: kept under any share
        pd.testing.assert_frame_equal(table, before)
    else:
        assert not table.equals(before), f"changing {name} changed no number"
    if name == "edits_per_relation":
        assert list(table.fact_id) == [f for f in before.fact_id if f in set(table.fact_id)] and len(table) == 1


# -- kn.edits: the methods behind one interface, each against an oracle of its own -------------------
from kn import edits  # noqa: E402
from kn.runs.phases import editing as editing_phase  # noqa: E402
from kn.hooks import count as hook_count  # noqa: E402
from kn.edits import summary as edit_summary  # noqa: E402


def _requests(res, which=("a", "b")):
    """a: Paris -> Japan, b: Japan -> Paris (each towards the other's answer), with the fact's neurons."""
    other = {"a": "b", "b": "a"}
    return [edits.Request((PROMPTS[f],), " " + ANSWERS[f], " " + ANSWERS[other[f]], FACTS[f][2],
                          tuple(res.fact_neurons(f)), keep=(PROMPTS["c"],)) for f in which]


def _logits(model, tok, prompt):
    with torch.no_grad():
        return model(tok(prompt, return_tensors="pt").input_ids).logits[0, -1]


SMALL = {"dai": {"lambda2": 200.0}, "scale": {}, "ft": {"steps": 10, "eps": 0.05, "lr": 0.05},
         "rome": {"steps": 10}, "kn-opt": {"steps": 30, "lr": 0.5}}


@pytest.mark.parametrize("name", sorted(edits.METHODS))
def test_every_edit_method_restores_the_model_bit_identically_and_composes(planted, name):
    lm, res, _ = planted
    assert set(SMALL) == set(edits.METHODS)
    before = editing.fingerprint(lm.model)
    clean = {f: _logits(lm.model, lm.tokenizer, PROMPTS[f]) for f in ("a", "b")}
    with edits.edit(lm, name, _requests(res), **SMALL[name]):  # two facts at once
        moved = {f: not torch.equal(_logits(lm.model, lm.tokenizer, PROMPTS[f]), clean[f]) for f in ("a", "b")}
    assert moved == {"a": True, "b": True}, moved
    assert editing.fingerprint(lm.model) == before and hook_count(lm.model) == 0
    with pytest.raises(RuntimeError, match="inside"):
        with edits.edit(lm, name, _requests(res, "a"), **SMALL[name]):
            raise RuntimeError("inside")
    assert editing.fingerprint(lm.model) == before and hook_count(lm.model) == 0


def test_edit_requests_and_methods_are_checked_once_with_clear_errors(planted):
    lm, res, _ = planted
    r = _requests(res, "a")[0]
    with pytest.raises(ValueError, match="unknown edit method 'memit'"):
        edits.edit(lm, "memit", [r])
    with pytest.raises(ValueError, match="has no setting 'lambda3'"):
        edits.edit(lm, "dai", [r], lambda3=1.0)
    with pytest.raises(ValueError, match=r"requests\[0\].neurons is empty"):
        edits.edit(lm, "kn-opt", [edits.Request(r.prompts, r.old, r.new)])
    with pytest.raises(ValueError, match="subject 'Spain' is not in its prompt"):
        edits.edit(lm, "rome", [edits.Request(r.prompts, r.old, r.new, "Spain")])
    with pytest.raises(ValueError, match="requests is empty"):
        edits.edit(lm, "ft", [])
    with pytest.raises(ValueError, match="positions must be"):
        edits.method("scale", positions="middle")


def test_dai_is_the_hand_edited_value_slot_update(planted):
    lm, res, _ = planted
    r = _requests(res, "a")[0]
    copy_ = _hand_edited(lm, r.neurons, r.old, r.new, 1.0, 8.0)
    with edits.edit(lm, "dai", [r], lambda1=1.0, lambda2=8.0):
        torch.testing.assert_close(_logits(lm.model, lm.tokenizer, r.prompt), _logits(copy_, lm.tokenizer, r.prompt))


@pytest.mark.parametrize("factor", [0.0, 2.0])
def test_scale_on_all_positions_equals_hand_scaled_value_slots(planted, factor):
    """A neuron's activation times f is its value slot times f (the output projection is linear)."""
    lm, res, _ = planted
    rs = _requests(res)
    copy_ = copy.deepcopy(lm.model)
    with torch.no_grad():
        for l, i in {n for r in rs for n in r.neurons}:
            copy_.transformer.h[l].mlp.c_proj.weight[i] *= factor
    with edits.edit(lm, "scale", rs, factor=factor, positions="all"):
        for f in ("a", "b", "c"):
            torch.testing.assert_close(_logits(lm.model, lm.tokenizer, PROMPTS[f]), _logits(copy_, lm.tokenizer, PROMPTS[f]))


def test_ft_keeps_its_norm_constraint_and_touches_one_matrix(planted):
    lm, res, _ = planted
    rs, eps = _requests(res), 0.02
    w0 = {k: v.clone() for k, v in lm.model.state_dict().items()}
    nll0 = sum(-math.log(kn.answer_prob(lm, r.prompt, r.new)) for r in rs)
    with edits.edit(lm, "ft", rs, layer=2, eps=eps, lr=0.02, steps=10):
        now = lm.model.state_dict()
        changed = [k for k in now if not torch.equal(now[k], w0[k])]
        assert changed == ["transformer.h.2.mlp.c_proj.weight"]
        diff, w = (now[changed[0]] - w0[changed[0]]).abs(), w0[changed[0]].abs()
        assert diff.max() > 0 and bool((diff <= eps + 2 * torch.finfo(torch.float32).eps * w).all())  # + rounding of W0 + dW
        assert sum(-math.log(kn.answer_prob(lm, r.prompt, r.new)) for r in rs) < nll0  # the loss it minimises fell


def _key(model, tok, layer, prompt, pos):
    seen = {}
    h = model.transformer.h[layer].mlp.c_proj.register_forward_hook(lambda m, a, o: seen.update(k=a[0][0, pos].clone()))
    with torch.no_grad():
        model(tok(prompt, return_tensors="pt").input_ids)
    h.remove()
    return seen["k"]


@pytest.mark.parametrize("covariance", ["identity", "generated"])
def test_rome_is_a_rank_one_update_meeting_w_k_equals_v_star_along_c_inverse_k(planted, covariance):
    lm, res, _ = planted
    r = _requests(res, "a")[0]
    layer = 1
    m = edits.method("rome", layer=layer, steps=15, covariance=covariance, cov_tokens=300)
    w0 = lm.model.transformer.h[layer].mlp.c_proj.weight.detach().clone()  # Conv1D: [width, hidden]
    pos = len(lm.tokenizer("the capital of France").input_ids) - 1
    k = _key(lm.model, lm.tokenizer, layer, r.prompt, pos)
    with edits.edit(lm, m, [r]):
        w1 = lm.model.transformer.h[layer].mlp.c_proj.weight.detach().clone()
        assert kn.answer_rank(lm, r.prompt, r.new) == 0  # reliability on the editing prompt
    d = (w1 - w0).double()
    s = torch.linalg.svdvals(d)
    assert s[1] < 1e-5 * s[0]  # rank one
    v_star = k @ w1 + lm.model.transformer.h[layer].mlp.c_proj.bias  # the key now reads v*
    m0 = k @ w0 + lm.model.transformer.h[layer].mlp.c_proj.bias
    torch.testing.assert_close((v_star - m0).double(), k.double() @ d, rtol=1e-5, atol=1e-5)
    u = d[:, d.abs().sum(0).argmax()]  # the left factor, up to scale: a column of the update
    if covariance == "identity":
        c = torch.eye(lm.width, dtype=torch.float64)
    else:  # the key covariance the update used, recomputed from the same seeded sample by brute force
        c = edits.rome.sample_keys(lm, layer, 300, 0)
        c = c + 0.1 * c.diagonal().mean() * torch.eye(lm.width, dtype=torch.float64)
    want = torch.linalg.lstsq(c, k.double()[:, None]).solution[:, 0]
    cos = torch.dot(u, want) / (u.norm() * want.norm())
    assert abs(cos.item()) > 1 - 1e-6


def test_kn_opt_writes_only_the_facts_neurons_and_flips_the_answer(planted):
    """The planted facts live in a few last-layer value slots: kn-opt, given the fact's located
    neurons, changes those rows and nothing else, and the new object becomes the answer."""
    lm, res, _ = planted
    r = _requests(res, "a")[0]
    w0 = {k: v.clone() for k, v in lm.model.state_dict().items()}
    with edits.edit(lm, "kn-opt", [r], steps=60, lr=0.5):
        assert kn.answer_rank(lm, r.prompt, r.new) == 0
        now = lm.model.state_dict()
        changed = {(int(k.split(".")[2]), int(i)) for k in now if not torch.equal(now[k], w0[k])
                   for i in (now[k] != w0[k]).any(1).nonzero()[:, 0]}
        assert changed and changed <= set(r.neurons)
        assert all(k.endswith("mlp.c_proj.weight") for k in now if not torch.equal(now[k], w0[k]))


# -- the "edit" phase: every method on the same counterfactual edits, the field's metrics ---------------
EDIT_OPTS = ("dai.lambda2=200", "ft.steps=10", "ft.eps=0.05", "ft.lr=0.05", "rome.steps=10", "kn-opt.lr=0.5",
             "kn-opt.steps=30")


def _edit_run(lm, out, **kw):
    kw = {"edit_options": EDIT_OPTS, **kw}
    return kn.run(lm, FACTSET, out, steps=4, min_prompts=1, phases=("locate", "edit"), progress=False, **kw)


@pytest.fixture(scope="module")
def edited(planted, tmp_path_factory):
    lm, _, weights = planted
    res = _edit_run(lm, tmp_path_factory.mktemp("edit"))
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    return lm, res


def test_edit_phase_measures_every_method_on_the_same_edits(edited):
    lm, res = edited
    df = res.edits
    assert list(df.columns) == editing_phase.EDIT_COLUMNS[:1] + ["language"] + editing_phase.EDIT_COLUMNS[1:]
    assert sorted(set(df.fact_id)) == ["a", "b"] and sorted(df.method) == sorted(2 * list(edits.METHODS))
    for row in df.itertuples():  # each edit towards the relation's other object
        assert row.new == ANSWERS["b" if row.fact_id == "a" else "a"] and row.n_neighbours == 2
    by = df.set_index(["fact_id", "method"])
    for f in ("a", "b"):
        assert by.loc[(f, "dai"), "reliability"] == 1.0 and by.loc[(f, "kn-opt"), "reliability"] == 1.0
        assert math.isnan(by.loc[(f, "dai"), "generalization"])  # one prompt per fact: nothing held out
        assert by.loc[(f, "scale"), "n_params"] == 0 and by.loc[(f, "kn-opt"), "n_neurons"] <= 10
    recorded = json.loads((res.out_dir / "config.json").read_text())["settings"]["edit"]["edit_options"]
    assert "kn-opt.lr=0.5" in recorded and 'rome.covariance="identity"' in recorded  # given and default, both written


def test_edit_metrics_against_a_hand_edited_copy(edited):
    """dai's row recomputed on a deep copy edited by hand: reliability is the new object's argmax at the
    prompt, locality the share of neighbours whose argmax did not move (single-token objects)."""
    lm, res = edited
    tok = lm.tokenizer
    row = res.edits.set_index(["fact_id", "method"]).loc[("a", "dai")]
    copy_ = _hand_edited(lm, res.fact_neurons("a"), " Paris", " Japan", 1.0, 200.0)
    assert row.reliability == float(int(_logits(copy_, tok, PROMPTS["a"]).argmax()) == _token(tok, "Japan"))
    same = [int(_logits(copy_, tok, PROMPTS[f]).argmax()) == int(_logits(lm.model, tok, PROMPTS[f]).argmax())
            for f in ("b", "c")]
    assert row.locality == sum(same) / 2 and row.locality_relation == same[0] and row.locality_other == same[1]
    assert row.old_kept == float(int(_logits(copy_, tok, PROMPTS["a"]).argmax()) == _token(tok, "Paris"))
    # the KL of the neighbours' next-token distributions, before || after, by torch's kl_div
    kls = [float(torch.nn.functional.kl_div(torch.log_softmax(_logits(copy_, tok, PROMPTS[f]).float(), -1),
                                            torch.log_softmax(_logits(lm.model, tok, PROMPTS[f]).float(), -1),
                                            log_target=True, reduction="sum")) for f in ("b", "c")]
    assert row.locality_kl == pytest.approx(sum(kls) / 2, rel=1e-4, abs=1e-7) and max(kls) > 0
    assert res.edits.set_index(["fact_id", "method"]).loc[("a", "scale"), "locality_kl"] >= 0


EDIT_CHANGED = {"edit_fluency": 0, "edit_batches": (2, 3), "edit_methods": ("dai",), "edit_options": ("dai.lambda1=0", "dai.lambda2=0.01"), "edit_facts": 1, "edit_side_facts": 0,
                "edit_prompts": 2, "edit_neuron_sets": ("own", "likn", "specific"), "edit_singles": False,
                "edit_batch_limit": (1,), "edit_keep_relation": 1}


@pytest.mark.parametrize("name", sorted(EDIT_CHANGED))
def test_each_edit_setting_changes_the_numbers(edited, tmp_path, name):
    from kn.runs.phases import PHASES as ALL

    assert set(EDIT_CHANGED) == {f.name for f in __import__("dataclasses").fields(ALL["edit"].Settings)}
    lm, res = edited
    out = tmp_path / "run"
    shutil.copytree(res.out_dir, out)
    kw = {name: EDIT_CHANGED[name]}
    if name == "edit_options":
        kw[name] = tuple(o for o in EDIT_OPTS if not o.startswith("dai.")) + EDIT_CHANGED[name]
    if name == "edit_keep_relation":  # r1 has two facts: one is kept only where it is not the other's neighbour
        base = _edit_run(lm, out, edit_side_facts=0).edits.set_index(["fact_id", "method"]).sort_index()
        kept = _edit_run(lm, out, edit_side_facts=0, **kw).edits.set_index(["fact_id", "method"]).sort_index()
        measured = [c for c in base.columns if c not in ("seconds", "edit_seconds")]
        others = [m for m in edits.METHODS if m != "kn-opt"]
        pd.testing.assert_frame_equal(base.loc[(slice(None), others), measured], kept.loc[(slice(None), others), measured])
        assert not base.loc[(slice(None), ["kn-opt"]), measured].equals(kept.loc[(slice(None), ["kn-opt"]), measured])
        return
    again = _edit_run(lm, out, **kw)
    table = again.edits
    if name == "edit_batch_limit":  # no batch without edit_batches (test_edit_batch_limit_keeps_the_first_batches)
        assert table.equals(res.edits) and again.edit_batches.empty
        return
    if name == "edit_singles":  # no single edit is made, and none made before is lost (a fresh run has none:
        assert len(res.edits) > 0 and table.equals(res.edits)  # test_edit_singles_off_runs_the_batches_alone)
        return
    if name == "edit_batches":  # the single edits stay; the two planned edits (c's relation has no other
        # object) also go at once, a batch of 2; none of 3 is filled
        assert res.edit_batches.empty and table.equals(res.edits)
        b = again.edit_batches
        assert sorted(b.method) == sorted(2 * list(edits.METHODS)) and (b.batch == 2).all() and (b.group == "2:0").all()
        assert b.set_index("fact_id").relation.to_dict() == {"a": "r1", "b": "r1"}
        assert sorted(set(b.fact_id)) == ["a", "b"]
        # the batched dai edit is both hand edits in one copy: each fact's reliability from that copy
        both = _hand_edited(lm, res.fact_neurons("a"), " Paris", " Japan", 1.0, 200.0)
        both = _hand_edited(type("L", (), {"model": both, "tokenizer": lm.tokenizer})(), res.fact_neurons("b"),
                            " Japan", " Paris", 1.0, 200.0)
        dai = b[b.method == "dai"].set_index("fact_id")
        for f, new in (("a", "Japan"), ("b", "Paris")):
            assert dai.loc[f, "reliability"] == float(int(_logits(both, lm.tokenizer, PROMPTS[f]).argmax())
                                                      == _token(lm.tokenizer, new))
        return
    if name in ("edit_prompts", "edit_neuron_sets"):  # the planted facts have one prompt each: nothing to hold
        # out either way; one language: no LIKN, so no neuron set beyond own (the edits redone, the same)
        pd.testing.assert_frame_equal(table.drop(columns=["seconds", "edit_seconds"]), res.edits.drop(columns=["seconds", "edit_seconds"]))
    else:
        assert not table.drop(columns=["seconds", "edit_seconds"]).equals(res.edits.drop(columns=["seconds", "edit_seconds"])), name
    if name == "edit_options":
        assert (table[table.method == "dai"].reliability < 1).any()  # a weak update does not flip the answer


def test_edit_metrics_on_hand_built_cases(planted):
    """Token accuracy of a two-token object against one plain pass over the whole sequence (argmax at
    each position before an object token); locality's agreement on hand-written top tokens."""
    from kn.edits.metrics import accuracy, agreement, token_accuracy

    lm, _, _ = planted
    tok = lm.tokenizer
    for prompt, answer in ((PROMPTS["a"], " Paris Japan"), (PROMPTS["b"], " Japan"), (PROMPTS["c"], " Italian is")):
        prefix = tok(prompt).input_ids
        gold = tok(answer, add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = lm.model(torch.tensor([prefix + gold])).logits[0]
        want = sum(int(logits[len(prefix) + j - 1].argmax()) == g for j, g in enumerate(gold)) / len(gold)
        assert token_accuracy(lm, prompt, answer) == want
    assert token_accuracy(lm, PROMPTS["a"], " Paris") == 1.0 and token_accuracy(lm, PROMPTS["a"], " Japan") == 0.0
    assert accuracy(lm, [(PROMPTS["a"], " Paris"), (PROMPTS["a"], " Japan")]) == 0.5 and math.isnan(accuracy(lm, []))
    assert agreement([[1, 2], [3]], [[1, 5], [3]]) == 0.75 and math.isnan(agreement([], []))


def test_kn_run_flags_reach_the_edit_settings(monkeypatch, tmp_path):
    import kn.cli as cli

    got = {}
    monkeypatch.setattr(cli, "cmd_run", lambda args: got.update(s=cli.run_settings(args)))
    cli.main(["run", "--phases", "locate,edit", "--edit-methods", "dai", "rome", "--edit-options", "rome.layer=4",
              "--edit-batches", "100", "10", "--out", str(tmp_path / "run")])
    s = got["s"].of("edit")
    assert s.edit_methods == ("dai", "rome") and s.edit_options == ("rome.layer=4",) and s.edit_batches == (10, 100)
    for bad in ((1,), (10, True), ("10",)):
        with pytest.raises(ValueError, match="edit_batches must be batch sizes, integers >= 2"):
            editing_phase.EditSettings(edit_batches=bad)
    with pytest.raises(ValueError, match="edit_options: 'rome=4' must read method.setting=value"):
        editing_phase.EditSettings(edit_options=("rome=4",))
    with pytest.raises(ValueError, match="edit method 'rome' has no setting 'layers'"):
        editing_phase.EditSettings(edit_options=("rome.layers=4",))
    with pytest.raises(ValueError, match="edit_methods must name edit methods"):
        editing_phase.EditSettings(edit_methods=("memit",))


def test_reverse_query_is_the_relations_reverse_with_subject_and_object_swapped():
    from kn.edits import portability

    capital = Fact("P36/fr", "P36", {"en": "France"}, {"en": "Paris"}, {"en": ["The capital of [X] is [Y]."]})
    capital_of = Fact("P1376/x", "P1376", {"en": "Rome"}, {"en": "Italy"}, {"en": ["[X] is the capital of [Y]."]})
    border = Fact("P47/x", "P47", {"en": "Spain"}, {"en": "Portugal"}, {"en": ["[X] shares a border with [Y]."]})
    ts = portability.reverse_templates([capital, capital_of, border])
    rev = portability.reverse_fact(capital, "Berlin", "en", ts)
    assert rev.relation == "P1376" and rev.causal_prompts("en") == ["Berlin is the capital of"]
    assert rev.object["en"] == "France"
    sym = portability.reverse_fact(border, "France", "en", ts)
    assert sym.causal_prompts("en") == ["France shares a border with"] and sym.object["en"] == "Spain"
    assert portability.reverse_fact(capital, "Berlin", "en", {}) is None  # P1376's templates absent
    other = Fact("P19/x", "P19", {"en": "Kafka"}, {"en": "Prague"}, {"en": ["[X] was born in [Y]."]})
    assert portability.reverse_fact(other, "Berlin", "en", ts) is None


def _plant_one(lm, prompt: str, answer: str, avoid) -> None:
    """`answer` made top-1 at `prompt` through the last layer's 3 most active neurons there (not `avoid`)."""
    last = lm.n_layers - 1
    slots = lm.model.transformer.h[last].mlp.c_proj.weight
    act = kn.activations(lm, prompt, answer)[last]
    act[[i for l, i in avoid if l == last]] = -math.inf
    top = act.topk(3).indices.tolist()
    e = lm.model.get_input_embeddings().weight[_token(lm.tokenizer, answer)].detach()
    with torch.no_grad():
        slots[top] = 50 * e / e.norm() / act[top, None]
        for _ in range(6):
            if kn.answer_rank(lm, prompt, answer) == 0:
                break
            slots[top] *= 2


def test_portability_against_a_hand_edited_copy(planted, monkeypatch, tmp_path):
    """r1 treated as symmetric: after "the capital of France is" Paris -> Japan, the reverse queries about
    Japan ("the capital of Japan is") and about Paris (planted: France) are asked for France; checked
    on a copy edited by hand."""
    from kn.edits import portability

    base, res0, _ = planted
    lm = copy.deepcopy(base)
    _plant_one(lm, "the capital of Paris is", " France", [n for f in FACTS for n in res0.fact_neurons(f)])
    tok = lm.tokenizer
    france = _token(tok, "France")
    assert int(_logits(lm.model, tok, "the capital of Paris is").argmax()) == france  # the reverse is known
    monkeypatch.setattr(portability, "REVERSE", {"r1": "r1"})
    res = _edit_run(lm, tmp_path / "run", edit_methods=("dai",))
    by = res.edits.set_index("fact_id")
    assert "a" in by.index and by.loc["a", "n_reverse"] == 1
    copy_ = _hand_edited(lm, res.fact_neurons("a"), " Paris", " Japan", 1.0, 200.0)
    row = by.loc["a"]
    assert row.reverse_known == 1.0
    assert row.portability == float(int(_logits(copy_, tok, "the capital of Japan is").argmax()) == france)
    assert row.portability_before == float(int(_logits(lm.model, tok, "the capital of Japan is").argmax()) == france)
    assert row.reverse_kept == float(int(_logits(copy_, tok, "the capital of Paris is").argmax()) == france)


def test_synonym_query_asks_for_the_new_objects_synonym_of_the_same_subject():
    from kn.edits import portability

    field = Fact("P101/x", "P101", {"en": "Niels Bohr"}, {"en": "physics"}, {"en": ["[X] works in the field of [Y]."]})
    q = portability.synonym_fact(field, "chemistry", "en")
    assert q.object["en"] == "chemist" and q.subject["en"] == "Niels Bohr"
    assert q.causal_prompts("en")[0] == "Niels Bohr is a famous" and len(q.causal_prompts("en")) == 3
    assert portability.synonym_fact(field, "manga", "en") is None  # no occupation for it
    assert portability.synonym_fact(field, "chemistry", "fr") is None  # no French map
    other = Fact("P19/x", "P19", {"en": "Kafka"}, {"en": "Prague"}, {"en": ["[X] was born in [Y]."]})
    assert portability.synonym_fact(other, "Berlin", "en") is None
    assert all(" " not in w and w.islower() for w in portability.OCCUPATIONS.values())


def test_synonymy_against_a_hand_edited_copy(planted, monkeypatch, tmp_path):
    """r1's objects given synonyms (Japan -> Tokyo, Paris -> Italian) and a synonym query "[X] speaks [Y]":
    after "the capital of France is" Paris -> Japan, "France speaks" is asked for Tokyo (the new object's
    synonym) and Italian (the old one's), on the edited model and before it; checked on a copy edited by hand."""
    from kn.edits import portability

    lm, res0, _ = planted
    tok = lm.tokenizer
    monkeypatch.setattr(portability, "SYNONYMS", {"r1": {"en": (("[X] speaks [Y]",), {"Japan": "Tokyo", "Paris": "Italian"})}})
    res = _edit_run(lm, tmp_path / "run", edit_methods=("dai",), edit_fluency=0)
    row = res.edits.set_index("fact_id").loc["a"]
    assert (res.edits.n_synonym == 1).all()  # a's new object Japan -> Tokyo, b's Paris -> Italian
    copy_ = _hand_edited(lm, res.fact_neurons("a"), " Paris", " Japan", 1.0, 200.0)
    top = {m: int(_logits(m, tok, "France speaks").argmax()) for m in (lm.model, copy_)}
    assert row.synonymy == float(top[copy_] == _token(tok, "Tokyo"))
    assert row.synonymy_before == float(top[lm.model] == _token(tok, "Tokyo"))
    assert row.synonym_known == float(top[lm.model] == _token(tok, "Italian"))
    assert row.synonym_kept == float(top[copy_] == _token(tok, "Italian"))
    assert row.n_reverse == 0 and math.isnan(row.portability)


def test_fluency_is_romes_generation_entropy():
    from kn.edits.metrics import fluency, words

    assert fluency("a b a b") == pytest.approx(0.97277, abs=1e-5) and fluency("a b c d") == pytest.approx(1.19499, abs=1e-5)
    assert words("Paris, France's capital.") == ["Paris", ",", "France", "'", "s", "capital", "."]
    assert fluency("") == 0.0


def test_sample_is_seeded_and_top1_is_greedy(planted):
    from kn.edits.metrics import sample

    lm, _, _ = planted
    state = torch.random.get_rng_state()
    a, b = sample(lm, PROMPTS["a"], 20, seed=3), sample(lm, PROMPTS["a"], 20, seed=3)
    assert a == b and torch.equal(torch.random.get_rng_state(), state)
    assert len(lm.tokenizer(a).input_ids) <= 20
    ids = lm.tokenizer(PROMPTS["a"], return_tensors="pt").input_ids
    with torch.no_grad():
        greedy = lm.model.generate(ids, do_sample=False, max_length=12, pad_token_id=0)
    assert sample(lm, PROMPTS["a"], 12, top_k=1) == lm.tokenizer.decode(greedy[0], skip_special_tokens=True)


def test_fluency_rows_before_and_after_the_edit(edited):
    from kn.edits.metrics import fluency, sample

    lm, res = edited
    by = res.edits.set_index(["fact_id", "method"])
    assert by.fluency.notna().all() and (by.fluency > 0).all()
    for f in ("a", "b"):  # one text per fact before the edit, whatever the method
        assert by.loc[f].fluency_before.nunique() == 1
    from kn.runs.phases.setting import digest

    seed = int(digest({"seed": 0, "fluency": "a"}), 16) % 2**31  # the phase's seed of fact a's text
    edited_lm = copy.copy(lm)
    edited_lm.model = _hand_edited(lm, res.fact_neurons("a"), " Paris", " Japan", 1.0, 200.0)
    assert by.loc[("a", "dai"), "fluency"] == pytest.approx(fluency(sample(edited_lm, PROMPTS["a"], 100, seed=seed)))
    assert by.loc[("a", "dai"), "fluency_before"] == pytest.approx(fluency(sample(lm, PROMPTS["a"], 100, seed=seed)))
    # scale's text, decoded beside the others as a change of slots, is the text under its own hooks
    req = edits.Request((PROMPTS["a"],), " Paris", " Japan", neurons=tuple(res.fact_neurons("a")))
    with edits.edit(lm, "scale", [req]):
        assert by.loc[("a", "scale"), "fluency"] == pytest.approx(fluency(sample(lm, PROMPTS["a"], 100, seed=seed)))


def test_rome_layer_trace_in_the_edit_phase_records_each_edits_traced_layer(planted, tmp_path):
    """rome.layer=trace: config.json says "trace", and each edit's record row names the layer causal
    tracing chose for that fact (recomputed here by kn.edits.tracing on the unedited model)."""
    from kn.edits.tracing import causal_trace

    lm, _, weights = planted
    res = _edit_run(lm, tmp_path / "run", edit_methods=("rome",), edit_options=("rome.steps=2", "rome.layer=trace"),
                    edit_fluency=0)
    recorded = json.loads((res.out_dir / "config.json").read_text())["settings"]["edit"]["edit_options"]
    assert 'rome.layer="trace"' in recorded
    rows = {}
    for line in (res.out_dir / "journal.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "edit":
            rows[rec["fact_id"]] = rec["rows"]
    assert sorted(rows) == ["a", "b"] and set(res.edits.method) == {"rome"}
    table = res.edits.set_index("fact_id")
    for f, (row,) in rows.items():
        traced = causal_trace(lm, PROMPTS[f], FACTS[f][2], " " + ANSWERS[f]).layer
        assert row["layer"] == traced and table.loc[f, "layer"] == traced, (row, table.loc[f])
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_the_edits_table_names_the_layer_of_each_one_layer_method(planted, tmp_path):
    """Column "layer": the given layer of rome and ft, round(n_layers / 3) when not given, and nothing
    for the neuron methods (dai, scale), which touch neurons of several layers."""
    lm, _, _ = planted
    res = _edit_run(lm, tmp_path / "run", edit_methods=("rome", "ft", "dai", "scale"),
                    edit_options=("rome.steps=2", "rome.layer=0", "ft.steps=1"), edit_fluency=0)
    by = res.edits.set_index(["fact_id", "method"]).layer
    assert {f for f, _ in by.index} == {"a", "b"}
    for f in ("a", "b"):
        assert by[(f, "rome")] == 0 and by[(f, "ft")] == round(lm.n_layers / 3)
        assert pd.isna(by[(f, "dai")]) and pd.isna(by[(f, "scale")])


def test_a_run_that_recorded_the_retired_edit_batch_setting_resumes_with_its_edits(edited, tmp_path):
    """config.json of a run made before edit_batches (it says "edit_batch": true) resumes: nothing is redone."""
    lm, res = edited
    out = tmp_path / "run"
    shutil.copytree(res.out_dir, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["settings"]["edit"]["edit_batch"] = True
    (out / "config.json").write_text(json.dumps(cfg))
    n = len((out / "journal.jsonl").read_text().splitlines())
    again = _edit_run(lm, out)
    assert len((out / "journal.jsonl").read_text().splitlines()) == n and again.edits.equals(res.edits)


# a second language "xx" of the planted facts: its own templates; b's object there is Tokyo (en: Japan)
XX = {"a": ("in [X] the capital city is [Y]", "Paris"), "b": ("[X] city is the capital of [Y]", "Tokyo"),
      "c": ("[X] language is [Y]", "Italian")}
PROMPTS_XX = {f: t.replace("[X]", FACTS[f][2]).replace(" [Y]", "") for f, (t, _) in XX.items()}
TWO = FactSet([Fact(f, rel, {"en": s, "xx": s}, {"en": a, "xx": XX[f][1]}, {"en": [t], "xx": [XX[f][0]]})
               for f, (rel, t, s, a) in FACTS.items()], "planted-en-xx")


def _top1(lm, items) -> float:
    """Share of (prompt, answer) pairs whose answer is the top-1 token (kn.answer_rank)."""
    return sum(kn.answer_rank(lm, p, a) == 0 for p, a in items) / len(items)


def _neurons_of(neurons, f: str, language: str) -> list:
    """The fact's knowledge neurons in `language`, as (layer, index), from a run's neurons table."""
    mine = neurons[(neurons.fact_id == f) & (neurons.language == language)]
    return list(zip(mine.layer.astype(int), mine["index"].astype(int)))


def _check_by_hand(lm, x, e, neurons):
    """Each row of `x` (edit_crosslingual, en and xx) recomputed: the same method's edit made here with
    kn.edits.edit through `neurons(fact, edit language, neurons_from)` (its one prompt, no side facts);
    top-1 counted on the other language's prompt after and before it, and the edits table's reliability
    on the edit language's prompt."""
    prompt = {"en": PROMPTS, "xx": PROMPTS_XX}
    obj = {"en": ANSWERS, "xx": {f: o for f, (_, o) in XX.items()}}
    opts = {}
    for o in EDIT_OPTS:
        head, value = o.split("=")
        m, k = head.split(".")
        opts.setdefault(m, {})[k] = json.loads(value)
    for row in x.fillna({"neurons_from": ""}).itertuples():  # ft and rome edit through no neuron set
        f, l, m = row.fact_id, row.language, row.measured
        made = e[(e.fact_id == f) & (e.language == l) & (e.method == row.method)
                 & (e.neurons_from.fillna("") == row.neurons_from)]
        new = made.new.item()  # in the edit's language
        new_fact, = (g for g in FACTS if g != f and FACTS[g][0] == row.relation and obj[l][g] == new)
        assert (row.old, row.new, row.n_prompts) == (obj[m][f], obj[m][new_fact], 1)
        req = edits.Request((prompt[l][f],), " " + obj[l][f], " " + obj[l][new_fact], FACTS[f][2],
                            tuple(neurons(f, l, row.neurons_from)))
        asked = [(prompt[m][f], " " + obj[m][new_fact])]
        kept = [(prompt[m][f], " " + obj[m][f])]
        assert row.reliability_before == _top1(lm, asked) and row.old_known == _top1(lm, kept)
        with edits.edit(lm, edits.method(row.method, **opts.get(row.method, {})), [req]):
            assert row.reliability == _top1(lm, asked), (f, l, row.method, row.neurons_from)
            assert row.old_kept == _top1(lm, kept), (f, l, row.method, row.neurons_from)
            assert made.reliability.item() == _top1(lm, [(prompt[l][f], " " + new)]), (f, l, row.method)


def test_edit_crosslingual_reliability_against_each_method_edited_by_hand(planted, tmp_path):
    """A run in en and xx: each single edit (each method) is asked in the other language, its new object
    there being the object of the fact it came from (a's edit Paris -> Japan asks xx for Tokyo, b's fact).
    Each row recomputed: the same method's edit made here with kn.edits.edit (the fact's knowledge
    neurons in the edit's language, its one prompt; no side facts), and top-1 counted on the other
    language's prompt after and before it."""
    lm, _, weights = planted
    res = kn.run(lm, TWO, tmp_path / "run", steps=4, min_prompts=1, phases=("locate", "edit"), languages=["en", "xx"],
                 edit_options=EDIT_OPTS, edit_side_facts=0, edit_fluency=0, progress=False)
    x, e = res.edit_crosslingual, res.edits
    assert list(x.columns) == ["fact_id", "language"] + editing_phase.CROSSLINGUAL_COLUMNS[1:]
    other = {"en": "xx", "xx": "en"}
    assert len(e) >= 2 * len(edits.METHODS) and set(e.language) <= {"en", "xx"}
    # one row per (edit, method, other language): every fact has prompts in both
    assert sorted(zip(x.fact_id, x.language, x.method, x.measured)) == sorted(
        (f, l, m, other[l]) for f, l, m in zip(e.fact_id, e.language, e.method))
    _check_by_hand(lm, x, e, lambda f, l, _: _neurons_of(res.neurons, f, l))
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert (e.neurons_from == "own").sum() == 3 * len(set(zip(e.fact_id, e.language))) and e.neurons_from.isna().sum() == (
        e.method.isin(["ft", "rome"]).sum())  # the default: each neuron method through the own set, once
    en = x[x.language == "en"].set_index(["fact_id", "method"])
    assert set(en.new.groupby("fact_id").first().items()) == {("a", "Tokyo"), ("b", "Paris")}  # translated
    assert (x.reliability != x.reliability_before).any() and (x.old_kept != x.old_known).any()  # the edits reach xx
    assert (x.reliability == 0).any()  # ... not every one
    recs = [json.loads(line) for line in (res.out_dir / "journal.jsonl").read_text().splitlines()]
    assert {r["fact_id"]: r["new_fact"] for r in recs if r.get("type") == "edit" and r["language"] == "en"} == {"a": "b", "b": "a"}


def test_a_one_language_run_keeps_its_edit_keys_records_and_tables(edited):
    """One language: the edit phase's record keys are the digest they were before cross-lingual rows, its
    records have none (nor new_fact), the edits table its columns and edit_crosslingual no row. Several
    languages: the key says the records hold them, so edits recorded before are recomputed."""
    from kn.runs.phases import make_phases
    from kn.runs.phases.setting import digest, scoped

    lm, res = edited
    assert res.edit_crosslingual.empty
    assert list(res.edit_crosslingual.columns) == ["fact_id", "language"] + editing_phase.CROSSLINGUAL_COLUMNS[1:]
    assert list(res.edits.columns) == editing_phase.EDIT_COLUMNS[:1] + ["language"] + editing_phase.EDIT_COLUMNS[1:]
    recs = [json.loads(line) for line in (res.out_dir / "journal.jsonl").read_text().splitlines()]
    mine = [r for r in recs if r.get("type") == "edit"]
    assert mine and not any("new_fact" in r or "neuron_sets" in r or any("crosslingual" in m or "neurons_from" in m
                                                                         for m in r["rows"]) for r in mine)
    uses = res.edits.method.map(edits.uses_neurons)  # neurons_from: "own" for dai, scale, kn-opt; none for ft, rome
    assert (res.edits.neurons_from[uses] == "own").all() and res.edits.neurons_from[~uses].isna().all() and uses.any()
    for languages, same in ((("en",), True), (("en", "xx"), False)):
        s = kn.runs.settings.RunSettings.make(res.settings, languages=languages)
        phases = {p.name: p for p in make_phases(s)}
        p = phases["edit"]
        before = digest({"phase": "edit", "common": s.common(), "needs": {"locate": phases["locate"].relation_key},
                         "settings": scoped(p.settings, "fact")})  # the key as Phase.bind made it before
        assert (p.fact_key == before) is same, languages
        if same:
            assert all(r["key"] == p.fact_key for r in mine)



@pytest.fixture(scope="module")
def crossed(planted, tmp_path_factory):
    """The en/xx run with every neuron set (given out of order: kept in kn.edits.NEURON_SETS order)."""
    lm, _, weights = planted
    res = kn.run(lm, TWO, tmp_path_factory.mktemp("crossed"), steps=4, min_prompts=1, phases=("locate", "edit"),
                 languages=["en", "xx"], edit_options=EDIT_OPTS, edit_side_facts=0, edit_fluency=0, progress=False,
                 edit_neuron_sets=("specific", "own", "likn"))
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    return lm, res


def _expected_sets(neurons) -> dict:
    """{(fact, language): {"own", "likn", "specific": neurons in the run's order}} from the neurons table
    alone: likn the intersection of the fact's sets in the languages where it has neurons (two or more),
    specific own minus likn."""
    out = {}
    for f, l in set(zip(neurons.fact_id, neurons.language)):
        found = [set(_neurons_of(neurons, f, m)) for m in ("en", "xx") if _neurons_of(neurons, f, m)]
        shared = set.intersection(*found) if len(found) >= 2 else set()
        own = _neurons_of(neurons, f, l)
        out[(f, l)] = {"own": own, "likn": [n for n in own if n in shared], "specific": [n for n in own if n not in shared]}
    return out


def test_edits_through_likn_and_language_specific_neurons(crossed):
    """edit_neuron_sets own, likn, specific: each neuron method (dai, scale, kn-opt) edits each fact once per
    non-empty set (column neurons_from; no row for an empty set), ft and rome once with no set; dai and scale
    touch exactly the set's neurons (recomputed from the neurons table); each row asked in the other language
    and recomputed by hand through that set; the record counts each set's size."""
    lm, res = crossed
    e, x = res.edits, res.edit_crosslingual
    assert list(e.columns) == editing_phase.EDIT_COLUMNS[:1] + ["language"] + editing_phase.EDIT_COLUMNS[1:]
    assert list(x.columns) == ["fact_id", "language"] + editing_phase.CROSSLINGUAL_COLUMNS[1:]
    sets = _expected_sets(res.neurons)
    edited = sorted(set(zip(e.fact_id, e.language)))
    neuron_methods = [m for m in edits.METHODS if edits.uses_neurons(m)]
    assert sorted(neuron_methods) == ["dai", "kn-opt", "scale"]
    for f, l in edited:
        mine = e[(e.fact_id == f) & (e.language == l)]
        by_set = mine[mine.method.isin(neuron_methods)]
        assert sorted(zip(by_set.method, by_set.neurons_from)) == sorted(
            (m, s) for s, ns in sets[(f, l)].items() if ns for m in neuron_methods), (f, l)
        rest = mine[~mine.method.isin(neuron_methods)]
        assert sorted(rest.method) == ["ft", "rome"] and rest.neurons_from.isna().all()
        for r in by_set[by_set.method.isin(["dai", "scale"])].itertuples():
            assert r.n_neurons == len(sets[(f, l)][r.neurons_from]), (f, l, r.method, r.neurons_from)
    # the planted run has every case: an edit with both sets, one with no LIKN, one whose neurons are all LIKN
    assert any(sets[k]["likn"] and sets[k]["specific"] for k in edited)
    assert any(not sets[k]["likn"] for k in edited) and any(not sets[k]["specific"] for k in edited)
    # every row, each set's too, asked in the other language; recomputed through the set's neurons
    other = {"en": "xx", "xx": "en"}
    assert sorted(zip(x.fact_id, x.language, x.method, x.neurons_from.fillna(""), x.measured)) == sorted(
        (f, l, m, s, other[l]) for f, l, m, s in zip(e.fact_id, e.language, e.method, e.neurons_from.fillna("")))
    _check_by_hand(lm, x, e, lambda f, l, s: sets[(f, l)][s or "own"])
    recs = [json.loads(line) for line in (res.out_dir / "journal.jsonl").read_text().splitlines()]
    counted = {(r["fact_id"], r["language"]): r["neuron_sets"] for r in recs if r.get("type") == "edit"}
    assert counted == {k: {s: len(ns) for s, ns in sets[k].items()} for k in edited}
    s = edit_summary.crosslingual(x, order=list(edits.METHODS))
    assert list(s.columns[:3]) == ["method", "neurons_from", "measured"]
    rank, set_rank = {m: i for i, m in enumerate(edits.METHODS)}, {"": -1, "own": 0, "likn": 1, "specific": 2}
    seen = list(dict.fromkeys(zip(x.method, x.neurons_from.fillna(""), x.measured)))  # in order of appearance
    assert list(zip(s.method, s.neurons_from.fillna(""), s.measured)) == sorted(
        seen, key=lambda k: (rank[k[0]], set_rank[k[1]]))
    dai = x[(x.method == "dai") & (x.neurons_from == "likn") & (x.measured == "xx")]
    assert s.set_index(["method", "neurons_from", "measured"]).loc[("dai", "likn", "xx"), "edits"] == len(dai) > 0
    single = edit_summary.by_method(e, order=list(edits.METHODS)).set_index(["method", "neurons_from"])
    assert single.loc[("dai", "likn"), "edits"] == sum(bool(sets[k]["likn"]) for k in edited)


def test_a_changed_edit_neuron_sets_recomputes_the_edits_on_resume(crossed, tmp_path, caplog):
    """edit_neuron_sets is part of the edit records' key (when not the default): the crossed run resumed
    with the default redoes its edits (own rows only, the same numbers), and with the sets again in another
    order finds its first records (nothing redone), and says per language how many edits each set has and
    how many facts had it empty."""
    lm, res = crossed
    out = tmp_path / "run"
    shutil.copytree(res.out_dir, out)

    def again(sets):
        return kn.run(lm, TWO, out, steps=4, min_prompts=1, phases=("locate", "edit"), languages=["en", "xx"],
                      edit_options=EDIT_OPTS, edit_side_facts=0, edit_fluency=0, progress=False,
                      edit_neuron_sets=sets)

    def n_edits():
        return sum(json.loads(line).get("type") == "edit" for line in (out / "journal.jsonl").read_text().splitlines())

    n = n_edits()
    own = again(("own",))
    assert n_edits() == 2 * n and set(own.edits.neurons_from.dropna()) == {"own"}
    timing = ["seconds", "edit_seconds"]
    was = res.edits[res.edits.neurons_from.fillna("own") == "own"].reset_index(drop=True)
    pd.testing.assert_frame_equal(own.edits.drop(columns=timing), was.drop(columns=timing))
    with caplog.at_level(logging.INFO, logger="kn.runs.phases.editing"):
        both = again(("likn", "specific", "own"))
    assert n_edits() == 2 * n and both.edits.equals(res.edits) and both.edit_crosslingual.equals(res.edit_crosslingual)
    sets = _expected_sets(res.neurons)
    for l in ("en", "xx"):
        mine = [k for k in set(zip(res.edits.fact_id, res.edits.language)) if k[1] == l]
        said = "; ".join(f"{s} {sum(bool(sets[k][s]) for k in mine)} ({sum(not sets[k][s] for k in mine)} empty)"
                         for s in ("own", "likn", "specific"))
        assert f"edit ({l}): edits per neuron set (no row where the fact's set is empty): {said}" in caplog.text


def test_edit_neuron_sets_are_checked_at_the_boundary(monkeypatch, tmp_path, capsys):
    """Bad values are refused naming the setting and the sets; the CLI flag takes the sets, any order."""
    import kn.cli as cli

    for bad in (("own", "shared"), (), "all", 3, ("likn", None)):
        with pytest.raises(ValueError, match=r"edit_neuron_sets must name neuron sets of \['own', 'likn', 'specific'\]"):
            editing_phase.EditSettings(edit_neuron_sets=bad)
    with pytest.raises(ValueError, match="edit_neuron_sets must name neuron sets"):
        kn.run(None, FACTSET, tmp_path / "never", phases=("locate", "edit"), edit_neuron_sets=("likn", "both"),
               progress=False)
    assert not (tmp_path / "never").exists()
    assert editing_phase.EditSettings(edit_neuron_sets="likn").edit_neuron_sets == ("likn",)
    got = {}
    monkeypatch.setattr(cli, "cmd_run", lambda args: got.update(s=cli.run_settings(args)))
    cli.main(["run", "--phases", "locate,edit", "--languages", "en,zh", "--edit-neuron-sets", "specific", "likn", "own",
              "--out", str(tmp_path / "run")])
    assert got["s"].of("edit").edit_neuron_sets == ("own", "likn", "specific")
    assert cli.main(["run", "--phases", "locate,edit", "--edit-neuron-sets", "lang", "--out", str(tmp_path / "run")])
    assert "edit_neuron_sets must name neuron sets of ['own', 'likn', 'specific']" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["GPT-2", "Gemma-3", "OPT", "BLOOM", "Llama"])
@pytest.mark.parametrize("name", ["ft", "rome", "kn-opt"])
def test_optimising_methods_edit_every_causal_family(family, name):
    """ft, rome and kn-opt (their losses read from one padded pass) move the editing prompt's next-token
    logits of every causal family, a flat FFN (OPT's [batch x seq, width] site) too, and restore the model
    bit-identically."""
    from kn.testing import tiny_lm

    lm = tiny_lm(family)
    r = edits.Request(("The capital of France is", "Paris is the capital of France and"), " Paris", " Japan",
                      subject="France", neurons=((1, 3), (1, 8), (0, 5)), keep=("The capital of Japan is",))
    settings = {"ft": {"steps": 3, "lr": 0.05}, "rome": {"layer": 1, "steps": 3}, "kn-opt": {"steps": 3, "lr": 0.5}}
    before = editing.fingerprint(lm.model)
    clean = _logits(lm.model, lm.tokenizer, r.prompt)
    with edits.edit(lm, name, [r], **settings[name]):
        assert not torch.allclose(_logits(lm.model, lm.tokenizer, r.prompt), clean)
    assert editing.fingerprint(lm.model) == before and hook_count(lm.model) == 0


def test_edit_singles_off_runs_the_batches_alone(planted, tmp_path):
    """edit_singles=False (a study in parts: the batches a run of their own): no single edit is made, the
    batches are, on the edits a run with single edits plans, and config.json says so."""
    import json

    lm, _, _ = planted
    kw = {"edit_methods": ("dai",), "edit_batches": (2,), "edit_fluency": 0, "edit_side_facts": 1}
    both = _edit_run(lm, tmp_path / "both", **kw)
    alone = _edit_run(lm, tmp_path / "alone", edit_singles=False, **kw)
    assert len(both.edits) > 0 and (alone.edits is None or len(alone.edits) == 0)
    assert len(alone.edit_batches) > 0 and set(alone.edit_batches.batch) == {2}
    assert (alone.edit_batches.seconds >= alone.edit_batches.edit_seconds).all()  # the batch's, measuring included
    cols = ["group", "fact_id", "reliability", "locality"]
    pd.testing.assert_frame_equal(alone.edit_batches[cols].sort_values(cols[:2]).reset_index(drop=True),
                                  both.edit_batches[cols].sort_values(cols[:2]).reset_index(drop=True))
    assert json.loads((tmp_path / "alone" / "config.json").read_text())["settings"]["edit"]["edit_singles"] is False


def test_edit_batch_limit_keeps_the_first_batches():
    """edit_batch_limit n: the first n batches of each size, the same batches as without a limit."""
    from types import SimpleNamespace

    def batches(**kw):
        e = editing_phase.Edit.__new__(editing_phase.Edit)
        e.settings, e.run = editing_phase.EditSettings(**kw), SimpleNamespace(seed=0)
        e._facts = [SimpleNamespace(relation=r) for r in ("r1", "r2")]
        e.plan = lambda relation, state: {f"{relation}/{i}": (i, f"{relation}/{i}") for i in range(7)}
        return e.batches(None)

    every, limited = batches(edit_batches=(2, 3)), batches(edit_batches=(2, 3), edit_batch_limit=2)
    assert list(every) == [f"2:{i}" for i in range(7)] + [f"3:{i}" for i in range(4)]
    assert limited == {g: every[g] for g in ("2:0", "2:1", "3:0", "3:1")}
    assert len({u for b in every.values() for u in b if len(b) == 2}) == 14  # disjoint within a size
    # one number per size, the smallest size first, the last number for the larger sizes
    assert batches(edit_batches=(3, 2), edit_batch_limit=(3, 1)) == {g: every[g] for g in ("2:0", "2:1", "2:2", "3:0")}
    assert batches(edit_batches=(2, 3), edit_batch_limit=(0, 1)) == {g: every[g] for g in [*(f"2:{i}" for i in range(7)), "3:0"]}
    assert batches(edit_batches=(2, 3), edit_batch_limit=(1,)) == {g: every[g] for g in ("2:0", "3:0")}
    for bad in (-1, (2, -1), ()):
        with pytest.raises(ValueError, match="edit_batch_limit"):
            editing_phase.EditSettings(edit_batch_limit=bad)


@pytest.mark.parametrize("family", ["GPT-2", "Gemma-3", "OPT", "BLOOM", "Llama"])
def test_rome_key_covariance_is_the_mean_key_product_of_seeded_samples(family):
    """kn.edits.rome.sample_keys (each text sampled over a key/value cache) equals C by its definition:
    texts drawn token by token from BOS with one seeded generator, every token recomputed from the whole
    text, then mean k k^T over the texts' keys but BOS's."""
    from kn.edits import rome
    from kn.testing import tiny_lm

    lm = tiny_lm(family)
    g = torch.Generator().manual_seed(3)
    bos = lm.tokenizer.bos_token_id if lm.tokenizer.bos_token_id is not None else lm.tokenizer.eos_token_id
    keys, n, length = [], 50, 8
    seen = {}
    hook = lm.down_proj(1).register_forward_hook(lambda m, a, o: seen.__setitem__("k", a[0]))
    with torch.no_grad():
        while sum(len(k) for k in keys) < n:
            ids = [bos]
            for _ in range(min(length, n - sum(len(k) for k in keys) + 1)):
                logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
                ids.append(int(torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=g)))
            lm.model(input_ids=torch.tensor([ids]))
            keys.append(seen["k"].reshape(-1, seen["k"].shape[-1])[1:].double())
    hook.remove()
    k = torch.cat(keys)
    rome._CACHE.clear()
    got = rome.sample_keys(lm, 1, n, seed=3, length=length)
    torch.testing.assert_close(got, k.T @ k / len(k), rtol=1e-6, atol=1e-9)
    assert hook_count(lm.model) == 0


@pytest.mark.parametrize("slots", [False, True], ids=["weights", "value-slot"])
def test_a_method_that_breaks_the_model_is_a_recorded_failure(planted, monkeypatch, tmp_path, slots):
    """A method whose edit leaves the model's logits NaN (its embeddings, or one value slot: a change of
    slots, whose single edits' fluency is decoded with the other methods' in one batch): its single edits
    and its batch are rows of edit_failures (method, fact or group, the sampler's error), none of its rows
    in edits or edit_batches; the other method's rows are all there and the model is restored."""
    import contextlib
    import dataclasses

    from kn.edits import base as edits_base

    @dataclasses.dataclass(frozen=True)
    class Breaks(edits_base.Method):
        name = "breaks"
        writes_slots = slots

        @contextlib.contextmanager
        def apply(self, lm, requests):
            w = lm.value_slots(1) if slots else lm.model.get_input_embeddings().weight
            kept = w.detach().clone()
            with torch.no_grad():
                (w[0] if slots else w).fill_(math.nan)
            try:
                yield
            finally:
                with torch.no_grad():
                    w.copy_(kept)
    monkeypatch.setitem(edits_base.METHODS, "breaks", Breaks)
    lm, _, weights = planted
    res = _edit_run(lm, tmp_path / "run", edit_methods=("dai", "breaks"), edit_batches=(2,), edit_fluency=30,
                    edit_side_facts=1)
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    f = res.edit_failures
    assert set(f.method) == {"breaks"} and set(f.error) == {"FloatingPointError"}
    assert f.message.str.contains("logits are not finite").all()
    single, batch = f[f.batch == 1], f[f.batch == 2]
    assert sorted(single.fact_id) == sorted(res.edits.fact_id.unique()) and len(single) > 0
    assert sorted(batch.group) == sorted(res.edit_batches.group.unique()) and batch.fact_id.isna().all()
    assert set(res.edits.method) == {"dai"} and set(res.edit_batches.method) == {"dai"}
    s = edit_summary.failures(f)
    assert s.set_index("batch").loc[2, "facts"] == 2 * len(batch)
