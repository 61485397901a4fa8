"""Suppress / amplify: what they change, that everything comes back exactly, and that attribution
inside them works."""
import contextlib
import copy

import pytest
import torch

import kn
from kn import arch, hooks
from kn.testing import TINY, tiny_lm
from kn.interventions import answer_rows, scaled
from kn.tokens import query

from test_batch import NEURONS as MANY, OTHER

NEURONS = [(0, 3), (1, 7), (2, 11)]


def logits(lm, prompt):
    ids, _ = query(lm, prompt)
    with torch.no_grad():
        return lm.model(input_ids=ids).logits


@pytest.mark.parametrize("family", ["BERT", "GPT-2", "Llama", "Gemma-3"])
def test_suppress_all_positions_equals_zeroed_value_slots(family):
    lm = tiny_lm(family)
    prompt = "Paris is the capital of [MASK] ." if lm.masked else "Paris is the capital of"
    with kn.suppress(lm, NEURONS, positions="all"):
        hooked = logits(lm, prompt)
    saved = {(l, i): arch.value_slots(lm.model, lm.family, l)[i].clone() for l, i in NEURONS}
    with torch.no_grad():
        for l, i in NEURONS:
            arch.value_slots(lm.model, lm.family, l)[i] = 0
    zeroed = logits(lm, prompt)
    with torch.no_grad():
        for (l, i), v in saved.items():
            arch.value_slots(lm.model, lm.family, l)[i] = v
    torch.testing.assert_close(hooked, zeroed, rtol=1e-5, atol=1e-6)


def test_answer_position_only_causal():
    lm = tiny_lm("Llama")
    clean = logits(lm, "Paris is the capital of")
    with kn.amplify(lm, NEURONS, 3.0):
        amped = logits(lm, "Paris is the capital of")
    torch.testing.assert_close(amped[:, :-1], clean[:, :-1])  # earlier positions untouched
    assert not torch.allclose(amped[:, -1], clean[:, -1])


def test_answer_position_only_masked():
    lm = tiny_lm("BERT")
    ids, pos = query(lm, "Paris is the capital of [MASK] .")
    with torch.no_grad():
        clean = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    with kn.suppress(lm, [(1, i) for i in range(lm.width)]), torch.no_grad():
        sup = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    # below and at layer 1's input nothing changes; layer 1's output changes at the mask only
    torch.testing.assert_close(sup[1], clean[1])
    changed = (sup[2] - clean[2]).abs().amax(-1)[0]
    assert changed[pos] > 0 and changed[torch.arange(len(changed)) != pos].max() == 0


@pytest.mark.parametrize("family", ["GPT-2", "BERT"])
def test_everything_restored_also_after_an_exception(family):
    lm = tiny_lm(family)
    prompt = "Paris is the capital of [MASK] ." if lm.masked else "Paris is the capital of"
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    before = logits(lm, prompt)
    with kn.suppress(lm, NEURONS):
        during = logits(lm, prompt)
    assert not torch.equal(during, before)
    with pytest.raises(RuntimeError, match="boom"):
        with kn.amplify(lm, NEURONS):
            raise RuntimeError("boom")
    assert hooks.count(lm.model) == 0
    assert torch.equal(logits(lm, prompt), before)
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_suppression_lowers_a_planted_fact():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_attribution import plant

    lm = tiny_lm("GPT-2", initializer_range=0.2)
    neuron = plant(lm, 1)
    v = kn.verify(lm, ["Paris is the capital of"], "France", [neuron],
                  control_prompts=["Tokyo is the capital of"], control_answer="Japan")
    assert v.fact.suppression < -0.5 and v.fact.amplification > 0.1
    assert abs(v.control.suppression) < abs(v.fact.suppression)


def test_bad_neurons():
    lm = tiny_lm("GPT-2")
    with pytest.raises(ValueError, match="out of range"):
        with kn.suppress(lm, [(5, 0)]):
            pass
    with pytest.raises(ValueError, match="FFN width"):
        with kn.suppress(lm, [(0, 10_000)]):
            pass
    with pytest.raises(ValueError, match="pair"):
        with kn.suppress(lm, [7]):
            pass
    assert hooks.count(lm.model) == 0


def test_update_fact_and_erase_restore_bit_identically():
    from kn import editing

    lm = tiny_lm("GPT-2", initializer_range=0.2)
    prompt = "Paris is the capital of"
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    neurons = [(1, i) for i in range(0, 48, 2)]
    before = kn.answer_prob(lm, prompt, "Japan")
    with editing.update_fact(lm, neurons, prompt, "France", "Japan", lambda2=8.0):
        during = kn.answer_prob(lm, prompt, "Japan")
        assert not torch.equal(lm.model.transformer.h[1].mlp.c_proj.weight, state["transformer.h.1.mlp.c_proj.weight"])
    assert during > before
    with pytest.raises(KeyError):
        with editing.erase(lm, neurons):
            assert lm.model.transformer.h[1].mlp.c_proj.weight[0].abs().sum() == 0
            raise KeyError("inside")
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_edit_formula_on_one_slot():
    from kn import editing

    lm = tiny_lm("Llama")
    prompt, l, i = "Paris is the capital of", 2, 5
    v = arch.value_slots(lm.model, lm.family, l)[i].clone()
    e_old = editing.word_embedding(lm, prompt, "France")
    e_new = editing.word_embedding(lm, prompt, "Japan")
    with editing.update_fact(lm, [(l, i)], prompt, "France", "Japan", lambda1=1.0, lambda2=8.0):
        got = arch.value_slots(lm.model, lm.family, l)[i].clone()
    want = v - v.norm() * e_old / e_old.norm() + 8 * v.norm() * e_new / e_new.norm()
    torch.testing.assert_close(got, want)
    assert not torch.equal(e_old, e_new)


# -- attribution inside an intervention (issue 12, finding 2) ----------------------------------------
def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("family", list(TINY))
@pytest.mark.parametrize("factor", [0.0, 2.5])
def test_attribution_inside_an_intervention_fast_equals_reference(family, factor, one_thread):
    """The fast path under kn.scaled equals the reference path under it (both model kinds, every
    family), and differs from the attribution without it."""
    lm = tiny_lm(family)
    prompt = "Paris is the capital of [MASK] ." if lm.masked else "Paris is the capital of"
    plain = kn.attribute(lm, prompt, "France Germany", steps=6)
    with kn.scaled(lm, NEURONS, factor):
        fast = kn.attribute(lm, prompt, "France Germany", steps=6)
        ref = kn.attribute(lm, prompt, "France Germany", steps=6, reference=True)
        located = kn.locate(lm, [prompt] * 3, "France", steps=4)  # the public path composes too
    assert _rel(fast, ref) < 1e-5 and _rel(fast, plain) > 1e-3
    assert isinstance(located, list) and hooks.count(lm.model) == 0
    if factor == 0.0:  # a suppressed neuron's activation is 0: it carries nothing (zero baseline)
        assert all(fast[l, i] == 0 for l, i in NEURONS)


@pytest.mark.parametrize("family", ["BERT", "GPT-2", "Llama", "Gemma-3"])
def test_attribution_under_suppression_equals_a_model_with_zeroed_slots(family, one_thread):
    """The oracle: suppressing at every position is the model whose value slots are zero (checked
    above); attributing that copy by the plain definition gives the same scores, suppressed neurons aside."""
    lm = tiny_lm(family)
    prompt = "Paris is the capital of [MASK] ." if lm.masked else "Paris is the capital of"
    with kn.suppress(lm, NEURONS, positions="all"):
        fast = kn.attribute(lm, prompt, "France", steps=6)
    model = copy.deepcopy(lm.model)
    with torch.no_grad():
        for l, i in NEURONS:
            arch.value_slots(model, lm.family, l)[i] = 0
    edited = kn.wrap(model, lm.tokenizer, name="zeroed copy")
    ref = kn.attribute(edited, prompt, "France", steps=6, reference=True)
    for l, i in NEURONS:
        ref[l, i] = 0  # its activation is not 0 in the copy, but its gradient is
    assert _rel(fast, ref) < 1e-5


@pytest.mark.parametrize("family", ["GPT-2", "Llama"])
def test_scaled_keeps_the_answer_rows_it_was_entered_in(family):
    """`scaled` entered inside `answer_rows(where)` acts at `where` even inside a later `answer_rows`;
    one entered outside acts at the rows of the pass."""
    lm = tiny_lm(family)
    ids = torch.tensor([[5, 9, 10, 11], [5, 9, 10, 12]])
    first = torch.tensor([[False] * 3 + [True], [False] * 4])
    every = torch.zeros(2, 4, dtype=torch.bool)
    every[:, -1] = True

    def last(*contexts):
        with torch.no_grad(), contextlib.ExitStack() as stack:
            for c in contexts:
                stack.enter_context(c)
            return lm.model(input_ids=ids).logits[:, -1]

    clean, amped = last(), last(scaled(lm, MANY, 3.0))
    with answer_rows(first), scaled(lm, MANY, 3.0), answer_rows(every):
        inside = last()
    with scaled(lm, OTHER, 0.0), answer_rows(every):
        outside = last()
    torch.testing.assert_close(inside, torch.stack([amped[0], clean[1]]))
    torch.testing.assert_close(outside, last(scaled(lm, OTHER, 0.0)))
    assert not torch.allclose(outside, clean) and kn.hooks.count(lm.model) == 0
