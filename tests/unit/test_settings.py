"""Attribution settings as one frozen value: recorded by value, rebuilt, accepted by attribute / locate."""
import dataclasses
import json

import pytest
import torch

import kn
from kn import baselines
from kn.hooks import hooked, site_hooks
from kn.localization import prompt_sets
from kn.testing import tiny_lm
from kn.tokens import targets

PROMPT = "Paris is the capital of"
PROMPTS = [PROMPT, "the capital of France is", "France is a country in Europe and its capital is"]


def test_defaults_and_thresholds():
    assert kn.IG() == kn.IG(steps=20, rule="riemann_left", baseline="zero", freeze_norm=True, batch_size=None)
    assert kn.IG.coarse_threshold == 0.2 and kn.Activation().coarse_threshold == 0.5


@pytest.mark.parametrize("value", [kn.IG(), kn.IG(steps=8, rule="gauss_legendre", freeze_norm=False, batch_size=3),
                                   kn.IG(baseline=torch.randn(3, 48)), kn.IG(screen=3), kn.IG(head_dtype="bfloat16"),
                                   kn.Activation()])
def test_recorded_by_value_and_rebuilt(value):
    d = json.loads(json.dumps(value.to_dict()))  # JSON-safe
    again = kn.settings.from_dict(d)
    assert again == value and hash(again) == hash(value) and type(again) is type(value)
    if not isinstance(getattr(value, "baseline", None), torch.Tensor):
        assert kn.settings.from_dict(dataclasses.asdict(value)) == value
        later = {"screen": None, "head_dtype": "float32"}  # to_dict leaves these out at their defaults
        unset = {k: v for k, v in later.items() if isinstance(value, kn.IG) and getattr(value, k) == v}
        assert dataclasses.asdict(value) == d | unset


def test_an_unset_screen_keeps_the_recorded_form_of_before():
    # the exact dict (and so config.json and every key derived from it) of IG() before `screen` existed
    before = {"steps": 20, "rule": "riemann_left", "baseline": "zero", "multiplier": "x-b", "freeze_norm": True,
              "batch_size": None, "kind": "ig"}
    assert json.dumps(kn.IG().to_dict()) == json.dumps(before)
    assert kn.settings.from_dict(before) == kn.IG() and kn.IG().screen is None
    assert kn.IG(screen=3).to_dict() == before | {"screen": 3}
    assert kn.settings.from_dict(kn.IG(screen=3).to_dict()) == kn.IG(screen=3)
    assert len({kn.IG(), kn.IG(screen=3), kn.IG(screen=2), kn.IG(screen=3)}) == 3
    # and of before `head_dtype`
    assert kn.IG().head_dtype == "float32" and kn.IG(head_dtype="bfloat16").to_dict() == before | {"head_dtype": "bfloat16"}
    assert kn.IG(head_dtype="bfloat16") != kn.IG() and len({kn.IG(), kn.IG(head_dtype="bfloat16")}) == 2


def test_frozen_and_compared_by_value():
    ig = kn.IG(steps=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ig.steps = 4
    assert ig != kn.IG(steps=9) and ig != kn.Activation()
    b = torch.zeros(3, 48)
    assert kn.IG(baseline=b) == kn.IG(baseline=b.clone()) != kn.IG(baseline=b + 1)
    assert len({kn.IG(), kn.IG(), kn.IG(rule="linspace")}) == 2


@pytest.mark.parametrize("kw,err,match", [
    (dict(steps=0), ValueError, "steps"), (dict(steps=2.5), ValueError, "steps"),
    (dict(rule="simpson"), ValueError, "riemann_left"), (dict(rule="riemann_trapezoid", steps=1), ValueError, ">= 2"),
    (dict(baseline="mean"), ValueError, "zero"), (dict(multiplier="b"), ValueError, "x-b"), (dict(baseline=torch.zeros(5)), ValueError, "n_layers, width"),
    (dict(baseline=[0.0]), TypeError, "baseline"), (dict(freeze_norm="yes"), TypeError, "freeze_norm"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(screen=0), ValueError, r"screen must be None \(every layer\) or an int >= 1.*got 0"),
    (dict(screen=2.0), ValueError, "screen"), (dict(screen=True), ValueError, "screen"),
    (dict(screen="3"), ValueError, "screen"),
    (dict(head_dtype="float16"), ValueError, r"head_dtype must be one of \('float32', 'bfloat16'\), got 'float16'"),
])
def test_validated_once_with_a_clear_error(kw, err, match):
    with pytest.raises(err, match=match):
        kn.IG(**kw)


def test_from_dict_errors():
    with pytest.raises(ValueError, match="kind"):
        kn.settings.from_dict({"steps": 20})
    with pytest.raises(ValueError, match="stpes"):
        kn.settings.from_dict({"kind": "ig", "stpes": 20})


def test_value_and_keywords_give_the_same_scores():
    lm = tiny_lm("Llama")
    a = kn.attribute(lm, PROMPT, "France", kn.IG(steps=6, rule="gauss_legendre"))
    b = kn.attribute(lm, PROMPT, "France", steps=6, rule="gauss_legendre")
    c = kn.attribute(lm, PROMPT, "France", kn.IG(steps=3), steps=6, rule="gauss_legendre")  # keywords override
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, kn.attribute(lm, PROMPT, "France", steps=6))
    with pytest.raises(TypeError, match="activations"):
        kn.attribute(lm, PROMPT, "France", kn.Activation())


def test_locate_takes_the_value_and_the_older_method_form():
    lm = tiny_lm("GPT-2")
    ig = kn.IG(steps=4, rule="linspace")
    assert kn.locate(lm, PROMPTS, "France", ig, share=0.5) == kn.locate(lm, PROMPTS, "France", steps=4,
                                                                       rule="linspace", share=0.5)
    want = [kn.coarse(kn.attribute(lm, p, "France", ig), 0.2) for p in PROMPTS]
    assert prompt_sets(lm, PROMPTS, "France", ig) == want
    act = [kn.coarse(kn.activations(lm, p, "France"), 0.5) for p in PROMPTS]
    assert prompt_sets(lm, PROMPTS, "France", kn.Activation()) == act
    assert prompt_sets(lm, PROMPTS, "France", method="activation", steps=20) == act  # kn.run's call form
    assert prompt_sets(lm, PROMPTS, "France", method="ig", steps=4, rule="linspace") == want
    with pytest.raises(TypeError, match="not both"):
        kn.locate(lm, PROMPTS, "France", kn.IG(), method="ig")
    with pytest.raises(TypeError, match="activation"):
        kn.locate(lm, PROMPTS, "France", kn.Activation(), steps=4)
    with pytest.raises(ValueError, match="method"):
        kn.locate(lm, PROMPTS, "France", method="gradient")


def test_scores_of_activation_keep_only_the_layers_asked():
    lm = tiny_lm("GPT-2")
    s = kn.scores(lm, PROMPT, "France", kn.Activation(), layers=[1])
    acts = kn.activations(lm, PROMPT, "France")
    assert torch.equal(s[1], acts[1]) and s[0].abs().sum() == 0 and s[2].abs().sum() == 0


def half_clean(lm, t):
    """A baseline unit for the test: half the clean site activations at the answer position."""
    seen = {}
    with torch.no_grad(), hooked(site_hooks(lm, lambda l, act: seen.__setitem__(l, act[0, t.pos].clone()))):
        lm.model(input_ids=t.ids)
    return 0.5 * torch.stack([seen[l] for l in range(lm.n_layers)])


def test_a_new_baseline_is_one_registry_entry(monkeypatch):
    lm = tiny_lm("GPT-2")
    monkeypatch.setitem(baselines.BASELINES, "half", half_clean)
    t = targets(lm, PROMPT, "France")[0]
    named = kn.attribute(lm, PROMPT, "France", steps=8, baseline="half")
    assert torch.equal(named, kn.attribute(lm, PROMPT, "France", steps=8, baseline=half_clean(lm, t)))
    assert kn.settings.from_dict(kn.IG(baseline="half").to_dict()).baseline == "half"
    ref = kn.attribute(lm, PROMPT, "France", steps=8, baseline="half", reference=True)
    assert float((named - ref).abs().max() / ref.abs().max()) < 1e-5
    zero = kn.attribute(lm, PROMPT, "France", steps=8, baseline=torch.zeros(lm.n_layers, lm.width))
    assert torch.equal(zero, kn.attribute(lm, PROMPT, "France", steps=8)) and not torch.equal(zero, named)


def test_completeness_from_a_nonzero_baseline():
    # sum of scores = P(x) - P(b) as the path integral converges (here b = x / 2 at layer 1)
    lm = tiny_lm("GPT-2")
    t = targets(lm, PROMPT, "France")[0]
    b = half_clean(lm, t)

    def p_with(v):
        def put(l, act):
            act = act.clone()
            act[0, t.pos] = v
            return act
        with torch.no_grad(), hooked(site_hooks(lm, put, [1])):
            return float(torch.softmax(lm.model(input_ids=t.ids).logits[0, t.pos], -1)[t.gold])

    delta = kn.answer_prob(lm, PROMPT, "France") - p_with(b[1])
    s = kn.attribute(lm, PROMPT, "France", kn.IG(steps=6, rule="gauss_legendre", baseline=b), layers=[1])
    assert abs(float(s.sum()) - delta) < 1e-3 * abs(delta)


def test_baseline_shape_is_checked_against_the_model():
    with pytest.raises(ValueError, match=r"baseline must have shape \[3, 48\]"):
        kn.attribute(tiny_lm("GPT-2"), PROMPT, "France", baseline=torch.zeros(2, 48))
