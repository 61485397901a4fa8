"""Two-stage IG (`kn.IG(screen=k)`): the layer ranking against a brute-force one, the screened attribution
against IG on layers picked here from `kn.grad_x_act`, and a planted neuron's layer surviving the screen."""
import pytest
import torch

import kn
from kn.screening import top_layers
from kn.testing import tiny_lm

from test_attribution import plant, prompt_of

LAYERS = 6  # tiny models with twice the usual layers, so that a screen has something to leave out


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


def brute_force(scores, layers, k):
    """Layer l is kept iff fewer than k layers beat it: a higher peak (largest positive score, else 0),
    or the same peak and a lower index."""
    def peak(l):
        return max([0.0] + [v for v in scores[l].tolist() if v > 0])
    return [l for l in layers
            if sum(1 for o in layers if peak(o) > peak(l) or (peak(o) == peak(l) and o < l)) < k]


def test_top_layers_equals_a_brute_force_ranking():
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        n, width = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
        scores = torch.randint(-3, 4, (n, width), generator=g).float()  # few values: many ties, all-negative rows
        layers = sorted(torch.randperm(n, generator=g)[: int(torch.randint(1, n + 1, (1,), generator=g))].tolist())
        k = int(torch.randint(1, len(layers) + 2, (1,), generator=g))
        got = top_layers(scores, layers, k)
        assert got == brute_force(scores, layers, k), (trial, scores, layers, k)
        assert len(got) == min(k, len(layers))


def test_top_layers_by_peak_not_by_sum():
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 2.0], [-9.0, -9.0, -9.0, -9.0], [5.0, -50, 0, 0]])
    assert top_layers(scores, [0, 1, 2, 3], 2) == [1, 3]
    assert top_layers(scores, [0, 2], 1) == [0]
    assert top_layers(torch.zeros(4, 3), [0, 1, 2, 3], 2) == [0, 1]  # all tied: the lower layers


def screened_layers(lm, prompt, answer, k, layers=None):
    """The k layers of `layers` (default all) whose largest positive gradient x activation score is the
    highest (ties: lower layer), by a plain loop over `kn.grad_x_act`."""
    gxa = kn.grad_x_act(lm, prompt, answer)
    layers = list(range(lm.n_layers)) if layers is None else layers
    peaks = {l: max(0.0, float(gxa[l].max())) for l in layers}
    chosen = []
    for _ in range(k):
        best = None
        for l in layers:
            if l not in chosen and (best is None or peaks[l] > peaks[best]):
                best = l
        chosen.append(best)
    return sorted(chosen)


@pytest.mark.parametrize("family,answer", [("GPT-2", "France"), ("Llama", "in France"), ("BERT", "France")])
@pytest.mark.parametrize("reference", [False, True])
def test_screened_ig_is_ig_on_the_layers_gradient_x_activation_picks(family, answer, reference):
    lm = tiny_lm(family, num_hidden_layers=LAYERS)
    prompt = "Paris is located" if answer == "in France" else prompt_of(lm)
    for k in (1, 2):
        chosen = screened_layers(lm, prompt, answer, k)
        got = kn.attribute(lm, prompt, answer, steps=4, screen=k, reference=reference)
        want = kn.attribute(lm, prompt, answer, steps=4, layers=chosen, reference=reference)
        assert torch.equal(got, want), (k, chosen)
        others = [l for l in range(lm.n_layers) if l not in chosen]
        assert got[others].abs().sum() == 0 and (got[chosen].abs().sum(1) > 0).all()
    plain = kn.attribute(lm, prompt, answer, steps=4, reference=reference)
    assert torch.equal(kn.attribute(lm, prompt, answer, steps=4, screen=LAYERS, reference=reference), plain)
    assert torch.equal(kn.attribute(lm, prompt, answer, steps=4, screen=LAYERS + 5, reference=reference), plain)


def test_the_screen_picks_among_the_layers_given():
    lm = tiny_lm("GPT-2", num_hidden_layers=LAYERS)
    given = [0, 2, 3, 5]
    chosen = screened_layers(lm, prompt_of(lm), "France", 2, given)
    got = kn.attribute(lm, prompt_of(lm), "France", kn.IG(steps=4, screen=2), layers=given)
    assert torch.equal(got, kn.attribute(lm, prompt_of(lm), "France", steps=4, layers=chosen))
    assert chosen != screened_layers(lm, prompt_of(lm), "France", 2)  # else the test shows nothing


@pytest.mark.parametrize("family", ["GPT-2", "Llama"])
def test_a_planted_neuron_survives_a_one_layer_screen(family):
    lm = tiny_lm(family, initializer_range=0.2, num_hidden_layers=LAYERS)
    layer = 3
    planted = plant(lm, layer)
    gxa = kn.grad_x_act(lm, prompt_of(lm), "France")
    assert int(gxa.max(1).values.argmax()) == layer  # the premise: its layer peaks
    scores = kn.attribute(lm, prompt_of(lm), "France", screen=1)
    assert [l for l in range(lm.n_layers) if scores[l].abs().sum() > 0] == [layer]
    assert divmod(int(scores.argmax()), lm.width) == planted
    assert kn.coarse(scores, 0.2) >= {planted}
    torch.testing.assert_close(scores[layer], kn.attribute(lm, prompt_of(lm), "France")[layer], rtol=1e-5, atol=1e-9)


def test_locate_screens_each_prompt():
    lm = tiny_lm("GPT-2", num_hidden_layers=LAYERS)
    prompts = [prompt_of(lm), "the capital of Paris is", "Paris is in"]
    sets = kn.localization.prompt_sets(lm, prompts, "France", kn.IG(steps=4, screen=1))
    for p, s in zip(prompts, sets):
        assert {l for l, _ in s} <= set(screened_layers(lm, p, "France", 1)), p
