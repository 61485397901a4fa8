"""The two-stage batched path (`kn.batch_scores` with `kn.IG(screen=k)`) records each answer token's
`Clean` from the screen's forward (`kn.gradxact.screen_targets`) instead of a second `clean_run`: the
record equals clean_run's, and the batched scores stay `kn.scores`' with no clean run at all."""
import pytest
import torch

import kn
from kn.attribution import batch_scores
from kn.gradxact import screen_targets
from kn.ig import clean, fast
from kn.testing import tiny_lm
from kn.tokens import targets

LAYERS = 6
CAUSAL = (["Paris is the capital of", "the city of Paris is located in the country of", "Paris is located", "Paris"],
          ["France", "France", "in France", "is"])
MASKED = (["Paris is the capital of [MASK] .", "the city of Paris is located in the country of [MASK] .",
           "Paris is located [MASK] ."], ["France", "France", "in France"])
# Gemma-3: a window shorter than the long prompt, post-FFN norms
FAMILIES = {"GPT-2": {}, "Llama": {}, "BERT": {}, "Gemma-3": dict(sliding_window=4, layer_types=None)}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


def lm_of(family):
    return tiny_lm(family, num_hidden_layers=LAYERS, **FAMILIES[family])


def all_targets(lm):
    prompts, answers = MASKED if lm.masked else CAUSAL
    return [t for p, a in zip(prompts, answers) for t in targets(lm, p, a)]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_screens_clean_equals_clean_run(family):
    lm = lm_of(family)
    ts = all_targets(lm)
    assert len(ts) >= 4  # a two-token answer among them
    _, got = screen_targets(lm, ts, [1, 3, 4])  # a screen over some layers records every layer
    if family == "Gemma-3":
        assert lm.post_ffn_norm(0) is not None and max(t.ids.shape[1] for t in ts) > 4
    for t, g in zip(ts, got):
        want = clean.clean_run(lm, t)
        assert (g.cached, g.pos) == (want.cached, want.pos) == (not lm.masked, -1 if not lm.masked else t.pos)
        assert not g.acts.requires_grad and g.acts.shape == (lm.n_layers, lm.width)
        torch.testing.assert_close(g.acts, want.acts, rtol=0, atol=0)
        assert g.rms.keys() == want.rms.keys() and bool(g.rms) == (family == "Gemma-3")
        for l in want.rms:
            assert not g.rms[l].requires_grad
            torch.testing.assert_close(g.rms[l], want.rms[l], rtol=0, atol=0)
        assert (g.cache is None) == (want.cache is None) == (lm.masked or t.ids.shape[1] == 1)
        for (gk, gv), (wk, wv) in zip(g.cache or [], want.cache or [], strict=True):
            assert gk.grad_fn is None and gv.grad_fn is None and not gk.requires_grad
            torch.testing.assert_close(gk, wk, rtol=0, atol=0)
            torch.testing.assert_close(gv, wv, rtol=0, atol=0)
    if not lm.masked:
        assert any(g.cache is not None for g in got)


def counted_clean_runs(monkeypatch) -> list:
    """The targets of each clean run the fast path starts from here on."""
    calls = []
    real = fast.clean_run

    def counted(lm, t):
        calls.append(t)
        return real(lm, t)

    monkeypatch.setattr(fast, "clean_run", counted)
    return calls


@pytest.mark.parametrize("family", list(FAMILIES))
def test_screened_batch_runs_no_clean_run(family, monkeypatch):
    lm = lm_of(family)
    prompts, answers = MASKED if lm.masked else CAUSAL
    ig = kn.IG(steps=6, rule="gauss_legendre", screen=2)
    calls = counted_clean_runs(monkeypatch)
    got = batch_scores(lm, prompts, answers, ig)
    assert calls == []
    want = [kn.scores(lm, p, a, ig) for p, a in zip(prompts, answers)]
    assert len(calls) == len(all_targets(lm))  # the pair-by-pair path still starts from clean runs
    for p, g, w in zip(prompts, got, want):
        scale = float(w.abs().max())
        assert scale > 0
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6 * scale, msg=f"{family} {p!r}")
        assert torch.equal(g.abs().sum(1) > 0, w.abs().sum(1) > 0), p  # the same screened layers
    calls.clear()
    batch_scores(lm, prompts, answers, kn.IG(steps=2, screen=LAYERS))  # no screen: clean runs
    assert len(calls) == len(all_targets(lm))
