"""What the fact explorer computes (kn.exploring), without widgets or a browser, on a tiny random model."""
import numpy as np
import pytest
import torch

import kn
from kn import exploring, hooks
from kn.checks import ArgumentError
from kn.testing import tiny_lm

PROMPTS = ["Paris is the capital of", "Paris is the city of", "Paris is located in", "Paris is in"]
STEPS = 4


@pytest.fixture(scope="module")
def gpt2(one_thread):
    return tiny_lm("GPT-2", initializer_range=0.2)


@pytest.mark.parametrize("check, value, said", [
    (exploring.check_k, 0, "top k is 0: the explorer lists 1 to 100 answers; set top k in that range"),
    (exploring.check_k, 101, "kn.probe(lm, prompt, k=101) lists more"),
    (exploring.check_k, 2.5, "top k must be an integer"),
    (exploring.check_steps, 10**6, "IG steps is 1000000: the explorer takes 1 to 200 path points"),
    (exploring.check_steps, -3, "IG steps is -3"),
    (lambda v: exploring.check_fraction(v, "threshold"), 1.01, "threshold is 1.01: it is a fraction; set it between 0 and 1"),
    (lambda v: exploring.check_fraction(v, "share"), float("nan"), "share must be finite"),
    (exploring.check_factor, -0.5, "factor is -0.5"),
    (exploring.check_mode, "boost", "the intervention is 'boost'"),
    (exploring.check_prompt, " \n", "the prompt is empty: type a prompt first"),
    (lambda v: exploring.check_paraphrases(v, 3), "a\n\nb\n", "2 paraphrase(s) given"),
])
def test_out_of_range_values_are_refused_by_name(check, value, said):
    with pytest.raises(ArgumentError) as err:
        check(value)
    assert said in str(err.value)


def test_in_range_values_pass_unchanged():
    assert exploring.check_k(100) == 100 and exploring.check_steps(1) == 1 and exploring.check_steps(200) == 200
    assert exploring.check_fraction(0, "share") == 0.0 and exploring.check_factor(0) == 0.0
    assert exploring.check_paraphrases(" a \n\nb\nc", 3) == ["a", "b", "c"]


def test_probe_fact(gpt2):
    probed = exploring.probe_fact(gpt2, PROMPTS[0], "France", 5)
    assert [p.token for p in probed.predictions] == [p.token for p in kn.probe(gpt2, PROMPTS[0], 5)]
    assert probed.answer_prob == pytest.approx(kn.answer_prob(gpt2, PROMPTS[0], "France"))
    assert probed.answer_rank == kn.answer_rank(gpt2, PROMPTS[0], "France")
    assert exploring.probe_fact(gpt2, PROMPTS[0], " ", 5).answer_prob is None


def test_attribution_in_groups_is_kn_attribute_with_ticks(gpt2):
    ticks = []
    scores = exploring.attribute_in_groups(gpt2, PROMPTS[0], "France", STEPS, groups=2, tick=lambda: ticks.append(1))
    assert len(ticks) == 2
    torch.testing.assert_close(scores, kn.attribute(gpt2, PROMPTS[0], "France", steps=STEPS), rtol=1e-5, atol=1e-7)


def test_exploration_locates_as_kn_locate_and_keeps_scores(gpt2, monkeypatch):
    r = exploring.Exploration(min_prompts=3)
    text = "\n".join(PROMPTS)
    assert r.to_attribute(gpt2, text, "France", STEPS, 0.2, 0.7) == PROMPTS
    located = r.locate(gpt2, text, "France", STEPS, 0.2, 0.7)
    assert located.neurons == kn.locate(gpt2, PROMPTS, "France", threshold=0.2, share=0.7, steps=STEPS)
    assert len(located.set_sizes) == 4 and r.same_fact(gpt2, text, "France", STEPS)
    monkeypatch.setattr(kn.attribution, "attribute", lambda *a, **k: pytest.fail("attributed again"))
    assert r.to_attribute(gpt2, text, "France", STEPS, 0.05, 1.0) == []
    assert r.locate(gpt2, text, "France", STEPS, 0.05, 1.0).neurons == kn.refine(
        [kn.coarse(r.cache.get(gpt2, p, "France", STEPS), 0.05) for p in PROMPTS], 1.0)
    assert not r.same_fact(gpt2, text, "Italy", STEPS)


def test_intervention_table_is_kn_suppress(gpt2):
    neurons = kn.locate(gpt2, PROMPTS, "France", threshold=0.1, steps=STEPS)
    assert neurons
    table = exploring.intervention_table(gpt2, PROMPTS, "France", neurons, "suppress")
    with kn.suppress(gpt2, neurons):
        direct = [kn.answer_prob(gpt2, p, "France") for p in PROMPTS]
    np.testing.assert_allclose(table["P after"], direct, rtol=1e-6)
    np.testing.assert_allclose(table["P before"], [kn.answer_prob(gpt2, p, "France") for p in PROMPTS], rtol=1e-6)
    assert exploring.mean_change(table) == pytest.approx(kn.ratio_of_means(table["P before"], direct))
    same = exploring.intervention_table(gpt2, PROMPTS, "France", neurons, "none")
    np.testing.assert_allclose(same["P after"], same["P before"])
    assert hooks.count(gpt2.model) == 0
