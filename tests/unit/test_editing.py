"""kn.editing's experiments over a run (update_facts, erase_relations) on a tiny GPT-2 with planted facts.

Oracles are independent of kn.editing: the erase numbers are recomputed on a deep copy of the model
whose output-projection columns the test zeroes itself, with a plain softmax over the full logits.
"""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

import kn
from kn import editing
from kn.testing import tiny_lm

PROMPTS = {"a": ("r1", "the capital of France is", "Paris"), "b": ("r1", "Tokyo is the capital of", "Japan"),
           "c": ("r2", "Italy speaks", "Italian")}


@pytest.fixture(scope="module")
def planted():
    """A tiny GPT-2 that knows three facts, planted by the test, and a run-shaped object naming them.

    Each fact's neurons are the last layer's 3 most active ones at the answer position (disjoint); the test writes
    their value slots along the answer's (tied) embedding, so the answer becomes the top-1 prediction.
    """
    torch.set_num_threads(1)
    lm = tiny_lm("GPT-2", initializer_range=0.2)
    last = lm.n_layers - 1
    slots = lm.model.transformer.h[last].mlp.c_proj.weight  # Conv1D [width, hidden]: row i = neuron i
    emb = lm.model.get_input_embeddings().weight
    facts, prompts, neurons = [], [], []
    for fid, (rel, prompt, answer) in PROMPTS.items():
        act = kn.activations(lm, prompt, answer)[last]
        act[[n["index"] for n in neurons]] = -math.inf  # each fact its own neurons
        top = act.topk(3).indices.tolist()
        assert (act[top] > 0).all()
        e = emb[lm.tokenizer(" " + answer, add_special_tokens=False).input_ids[0]].detach()
        with torch.no_grad():
            slots[top] = 50 * e / e.norm() / act[top, None]  # 150 e/|e| at its own prompt
        facts.append({"fact_id": fid, "relation": rel, "answer": answer, "error": None})
        prompts.append({"fact_id": fid, "prompt": prompt})
        neurons += [{"fact_id": fid, "relation": rel, "layer": last, "index": i, "n_facts_sharing": 1} for i in top]
    run = SimpleNamespace(facts=pd.DataFrame(facts), prompts=pd.DataFrame(prompts), neurons=pd.DataFrame(neurons),
                          relations=pd.DataFrame({"relation": ["r1", "r2"], "facts_located": [2, 1]}))
    for _ in range(6):  # facts interfere: strengthen the ones whose answer is not top-1 yet
        weak = [f for f, (_, prompt, answer) in PROMPTS.items() if kn.answer_rank(lm, prompt, answer) != 0]
        with torch.no_grad():
            for f in weak:
                slots[[n["index"] for n in neurons if n["fact_id"] == f]] *= 2
    assert not weak, f"planting failed for {weak}"
    return lm, run


def test_update_facts_moves_the_answer_and_restores_the_model(planted):
    lm, run = planted
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    df = editing.update_facts(lm, run, lambda2=200.0, progress=False)
    assert list(df.columns) == editing.UPDATE_COLUMNS
    # r1 has two facts: each is edited towards the other's answer; r2 has no second object: no edit
    assert sorted(df.fact_id) == ["a", "b"]
    ans = dict(zip(run.facts.fact_id, run.facts.answer))
    for row in df.itertuples():
        assert row.old == ans[row.fact_id] and row.new == ans["b" if row.fact_id == "a" else "a"]
        assert row.success == 1.0 and row.changed == 1.0  # a strong edit through the fact's own neurons
        assert 0 <= row.random_success <= 1 and row.n_neurons == 3
        assert row.intra_ppl_before > 0 and row.inter_ppl_after > 0
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def _oracle(model, tok, items):
    """(accuracy, perplexity) by plain forward passes over the whole sequence (single-token answers)."""
    hits, nll = 0, 0.0
    for prompt, answer in items:
        ids = tok(prompt, return_tensors="pt").input_ids
        gold = tok(" " + answer, add_special_tokens=False).input_ids
        with torch.no_grad():
            p = torch.softmax(model(ids).logits[0, -1], -1)
        hits += int(p.argmax()) == gold[0]
        nll -= math.log(p[gold[0]].item())
    return hits / len(items), math.exp(nll / len(items))


def test_erase_relations_against_a_hand_erased_copy(planted):
    lm, run = planted
    df = editing.erase_relations(lm, run, ["r1"], k=20, progress=False)
    row = df.iloc[0]
    r1 = run.neurons[run.neurons.relation == "r1"]
    cols = sorted(set(r1["index"]))
    assert row.n_neurons == len(cols)  # k = 20 > the relation's distinct neurons: all of them
    copy_ = copy.deepcopy(lm.model)
    with torch.no_grad():  # GPT-2's Conv1D c_proj weight is [width, hidden]: row i is neuron i's slot
        copy_.transformer.h[lm.n_layers - 1].mlp.c_proj.weight[cols] = 0
    ans = dict(zip(run.facts.fact_id, run.facts.answer))
    mine = [(PROMPTS[f][1], ans[f]) for f in ("a", "b")]
    rest = [(PROMPTS["c"][1], ans["c"])]
    acc_b, ppl_b = _oracle(lm.model, lm.tokenizer, mine)
    acc_a, ppl_a = _oracle(copy_, lm.tokenizer, mine)
    oacc_a, oppl_a = _oracle(copy_, lm.tokenizer, rest)
    assert row.acc_before == acc_b == 1.0
    assert math.isclose(row.ppl_before, ppl_b, rel_tol=1e-4)
    assert row.acc_after == acc_a and math.isclose(row.ppl_after, ppl_a, rel_tol=1e-4)
    assert row.other_acc_after == oacc_a and math.isclose(row.other_ppl_after, oppl_a, rel_tol=1e-4)
    assert row.ppl_after > row.ppl_before  # zeroing the most active neurons hurts the relation
    with pytest.raises(ValueError, match="no located fact"):
        editing.erase_relations(lm, run, ["P999"], progress=False)
