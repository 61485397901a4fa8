"""kn.editing's experiments over a real run (update_facts, erase_relations) on a tiny GPT-2 with planted facts.

Oracles are independent of kn.editing: the numbers are recomputed on a deep copy of the model whose
value slots (GPT-2: rows of the Conv1D c_proj weight) the test edits or zeroes itself, with a plain
softmax over the full logits.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

import kn
from kn import editing
from kn.data.schema import Fact, FactSet
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


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny GPT-2 that knows three planted facts, and a real kn run over them (one prompt each)."""
    torch.set_num_threads(1)
    lm = tiny_lm("GPT-2", initializer_range=0.2)
    _plant(lm)
    facts = FactSet([Fact(f, rel, {"en": s}, {"en": a}, {"en": [t]}) for f, (rel, t, s, a) in FACTS.items()], "planted")
    res = kn.run(lm, facts, tmp_path_factory.mktemp("run"), steps=4, min_prompts=1, controls=False, progress=False)
    assert res.complete and res.error_free_facts() == ["a", "b", "c"]
    assert all(res.fact_neurons(f) for f in FACTS), res.neurons
    return lm, res


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


def test_update_facts_moves_the_answer_and_restores_the_model(planted):
    lm, res = planted
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    df = editing.update_facts(lm, res, lambda2=200.0, progress=False)
    assert list(df.columns) == editing.UPDATE_COLUMNS
    # r1 has two facts: each is edited towards the other's answer; r2 has no second object: no edit
    assert sorted(df.fact_id) == ["a", "b"]
    for row in df.itertuples():
        assert row.old == ANSWERS[row.fact_id] and row.new == ANSWERS["b" if row.fact_id == "a" else "a"]
        assert row.success == 1.0 and row.changed == 1.0  # a strong edit through the fact's own neurons
        assert row.n_neurons == len(res.fact_neurons(row.fact_id))  # planted neurons are not shared
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_plan_updates_is_seeded_and_draws_controls_in_the_same_layers(planted):
    lm, res = planted
    plan = editing.plan_updates(lm, res, seed=0)
    assert plan == editing.plan_updates(lm, res, seed=0)
    assert [u.random_neurons for u in editing.plan_updates(lm, res, seed=1)] != [u.random_neurons for u in plan]
    for u in plan:
        assert u.neurons == tuple(res.fact_neurons(u.fact_id)) and u.prompts == ((PROMPTS[u.fact_id], " " + u.old),)
        assert {l for l, _ in u.random_neurons} == {l for l, _ in u.neurons}
        assert 1 <= len(u.random_neurons) <= len(u.neurons)
        other = "b" if u.fact_id == "a" else "a"
        assert u.intra == ((PROMPTS[other], " " + ANSWERS[other]),) and u.inter == ((PROMPTS["c"], " " + ANSWERS["c"]),)
    assert editing.plan_updates(lm, res, per_relation=1, seed=0)[0] in plan
    # a neuron shared by more than max_share of the relation's facts is left out (unless the fact's alone)
    assert editing.plan_updates(lm, res, max_share=0.0) == plan  # every planted neuron is one fact's


def test_measure_update_against_a_hand_edited_copy(planted):
    lm, res = planted
    u = editing.plan_updates(lm, res, seed=0)[0]
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


def test_erase_relations_against_a_hand_erased_copy(planted):
    lm, res = planted
    df = editing.erase_relations(lm, res, ["r1"], k=20, progress=False)
    assert list(df.columns) == editing.ERASE_COLUMNS
    row = df.iloc[0]
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
    oacc_a, oppl_a = _oracle(copy_, lm.tokenizer, rest)
    assert row.acc_before == acc_b == 1.0
    assert math.isclose(row.ppl_before, ppl_b, rel_tol=1e-4)
    assert row.acc_after == acc_a and math.isclose(row.ppl_after, ppl_a, rel_tol=1e-4)
    assert row.other_acc_after == oacc_a and math.isclose(row.other_ppl_after, oppl_a, rel_tol=1e-4)
    assert row.ppl_after > row.ppl_before  # zeroing the most active neurons hurts the relation
    (two,) = editing.plan_erasures(res, ["r1"], k=2)  # the most frequent: no other neuron serves more facts
    counts = res.relation_neuron_counts("r1")
    assert len(set(two.neurons)) == 2 and set(two.neurons) <= set(counts)
    assert min(counts[n] for n in two.neurons) >= max(c for n, c in counts.items() if n not in two.neurons)
    with pytest.raises(ValueError, match="no located fact"):
        editing.erase_relations(lm, res, ["P999"], progress=False)
