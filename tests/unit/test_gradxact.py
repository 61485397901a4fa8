"""Gradient x activation (kn.GradXAct) against captum's InputXGradient on the site function, layer by
layer, in every tiny family; and as a first-class attribution setting (scores, locate, run, CLI)."""
import pytest
import torch
from captum.attr import InputXGradient

import kn
from kn.hooks import hooked, site_hooks
from kn.testing import TINY, tiny_lm
from kn.tokens import targets

from test_attribution import prompt_of, rel, site_function


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.mark.parametrize("family", list(TINY))
def test_agrees_with_captum_input_x_gradient(family):
    lm = tiny_lm(family)
    ours = kn.grad_x_act(lm, prompt_of(lm), "France")
    t = targets(lm, prompt_of(lm), "France")[0]
    x = kn.activations(lm, prompt_of(lm), "France")
    for layer in range(lm.n_layers):
        theirs = InputXGradient(site_function(lm, t, layer)).attribute(x[layer][None].requires_grad_())[0]
        assert rel(ours[layer], theirs) < 1e-5, (family, layer)
    assert torch.equal(kn.scores(lm, prompt_of(lm), "France", kn.GradXAct()), ours)


def test_against_central_differences():
    """x_i * (f(x + h e_i) - f(x - h e_i)) / 2h on the neurons with the largest scores, f = P(gold) with
    the site of one layer set, computed by a float64 model end to end."""
    lm = tiny_lm("GPT-2")
    lm.model.double()
    t = targets(lm, prompt_of(lm), "France")[0]
    x = kn.activations(lm, prompt_of(lm), "France").double()
    ours = kn.grad_x_act(lm, prompt_of(lm), "France").double()

    def f(layer, v):
        def put(_, act):
            act = act.clone()
            act[0, t.pos] = v
            return act
        with torch.no_grad(), hooked(site_hooks(lm, put, [layer])):
            return torch.softmax(lm.model(input_ids=t.ids).logits[0, t.pos], -1)[t.gold].item()

    for layer in (0, lm.n_layers - 1):
        for i in ours[layer].abs().topk(5).indices.tolist():
            e = torch.zeros_like(x[layer])
            e[i] = 1e-5
            fd = (f(layer, x[layer] + e) - f(layer, x[layer] - e)) / 2e-5
            assert ours[layer, i].item() == pytest.approx(x[layer, i].item() * fd, rel=1e-5)


def test_multi_token_answers_sum_their_tokens_and_layers_mask():
    lm = tiny_lm("Llama")
    p = "Paris is located"
    both = kn.grad_x_act(lm, p, "in France")
    parts = targets(lm, p, "in France")
    assert len(parts) == 2
    from kn.gradxact import grad_x_act_target

    layers = list(range(lm.n_layers))
    assert torch.allclose(both, sum(grad_x_act_target(lm, t, layers) for t in parts))
    only = kn.grad_x_act(lm, p, "in France", layers=[1])
    assert torch.equal(only[1], both[1]) and not only[0].any()


def test_a_first_class_setting(tmp_path):
    """GradXAct goes wherever IG does: settings from and to dicts, kn.locate, kn.run and `kn run --method`."""
    from kn import cli
    from kn.settings import from_dict, resolve

    assert from_dict(kn.GradXAct().to_dict()) == kn.GradXAct() and resolve(method="gradxact") == kn.GradXAct()
    with pytest.raises(TypeError, match="integrated gradients"):
        resolve(kn.GradXAct(), steps=4)
    lm = tiny_lm("GPT-2", initializer_range=0.2)
    prompts = ["Paris is the capital of", "the capital city of Paris is in", "Paris lies in the country of"]
    located = kn.locate(lm, prompts, "France", kn.GradXAct(), threshold=0.2, share=0.5, min_prompts=2)
    assert located and all(0 <= l < lm.n_layers for l, _ in located)
    from test_run import tiny_facts

    res = kn.run(lm, tiny_facts(), tmp_path / "r", attribution=kn.GradXAct(), progress=False)
    assert res.settings.attribution == kn.GradXAct() and res.facts.n_neurons.notna().any()
    assert cli.main(["run", "--data", "builtin", "--relations", "capital", "--facts-per-relation", "1", "--method",
                     "gradxact", "--steps", "4", "--out", str(tmp_path / "cli")]) == 2  # steps belong to IG
    assert kn.runs.RunSettings.make(attribution=resolve(method="gradxact")).attribution.coarse_threshold == 0.2
