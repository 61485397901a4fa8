"""The screen of the two-stage path (`kn.gradxact.screen_targets`, `kn.IG(screen=k)`) runs a call's answer
tokens in padded batched passes: its scores equal a brute-force autograd reference run per token, each
token's recorded `Clean` equals `clean_run`'s, and the batched path (`kn.batch_scores`) starts IG from those
records with no clean run at all, with the scores of `kn.scores`."""
import pytest
import torch

import kn
from kn.attribution import batch_scores
from kn.gradxact import grad_x_act_targets, screen_targets
from kn.hooks import hooked, site_hooks
from kn.ig import clean, fast
from kn.ig.plan import token_bytes
from kn.ig.walks import Walks
from kn.testing import tiny_lm
from kn.tokens import Target, targets

LAYERS = 6
CAUSAL = (["Paris is the capital of", "the city of Paris is located in the country of", "Paris is located", "Paris"],
          ["France", "France", "in France", "is"])
MASKED = (["Paris is the capital of [MASK] .", "the city of Paris is located in the country of [MASK] .",
           "Paris is located [MASK] ."], ["France", "France", "in France"])
# Gemma-3: a window shorter than the long prompt, post-FFN norms; BLOOM: ALiBi from the attention mask;
# OPT: positions from the attention mask, an FFN over flattened rows
FAMILIES = {"GPT-2": {}, "Llama": {}, "BERT": {}, "Gemma-3": dict(sliding_window=4, layer_types=None),
            "BLOOM": {}, "OPT": {}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


def lm_of(family):
    return tiny_lm(family, num_hidden_layers=LAYERS, **FAMILIES[family])


def pair_targets(lm):
    prompts, answers = MASKED if lm.masked else CAUSAL
    return [t for p, a in zip(prompts, answers) for t in targets(lm, p, a)]


def all_targets(lm):
    """Every answer token of the prompts (of different lengths; a two-token answer), and for a causal LM a
    one-token context (the <bos> alone, which tokenizing a prompt never gives)."""
    ts = pair_targets(lm)
    if not lm.masked:
        bos = lm.tokenizer.bos_token_id
        ts.insert(2, Target(torch.tensor([[bos]], device=lm.device), 0, ts[0].gold, (1, 1)))
    return ts


def close(got, want, tol=1e-5):
    """Equal up to float summation order (a padded batch multiplies in other blocks than one row)."""
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * float(want.abs().max()))


def brute_force(lm, t, layers):
    """x * dP(gold)/dx [n_layers, width] of one answer token, zero outside `layers`: per layer, one unpadded
    forward with the site at the answer position replaced by a leaf of its clean value, the full softmax,
    and autograd."""
    out = torch.zeros(lm.n_layers, lm.width)
    for layer in layers:
        leaf = {}

        def put(_, act):
            act = act.clone()
            leaf["x"] = act[0, t.pos].detach().clone().requires_grad_(True)
            act[0, t.pos] = leaf["x"]
            return act

        with torch.enable_grad(), hooked(site_hooks(lm, put, [layer])):
            logits = lm.model(input_ids=t.ids, use_cache=False).logits
            p = torch.softmax(logits[0, t.pos].float(), -1)[t.gold]
        (grad,) = torch.autograd.grad(p, leaf["x"])
        out[layer] = (leaf["x"] * grad).detach().float()
    return out


def passes_counted(lm) -> list:
    """(shapes, handle): the [batch, seq] of each forward pass of `lm.model` until `handle` is removed."""
    shapes = []
    handle = lm.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    return shapes, handle


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batched_screen_scores_equal_a_brute_force_per_token(family):
    lm = lm_of(family)
    ts = all_targets(lm)
    layers = [0, 2, 3, 5]
    shapes, handle = passes_counted(lm)
    try:
        got, _ = screen_targets(lm, ts, layers)
        plain = grad_x_act_targets(lm, ts, layers)
    finally:
        handle.remove()
    assert len({t.ids.shape[1] for t in ts}) >= 3 and len(ts) >= 4
    assert shapes == [(len(ts), max(t.ids.shape[1] for t in ts))] * 2  # one padded pass for all, not one per token
    for t, g, p in zip(ts, got, plain, strict=True):
        want = brute_force(lm, t, layers)
        assert want[layers].abs().sum(1).gt(0).all()
        close(g, want)
        assert torch.equal(g, p)  # recording changes nothing


@pytest.mark.parametrize("family", ["GPT-2", "Gemma-3"])
def test_capped_passes_split_the_rows_not_the_scores(family):
    """A budget of 12 tokens per pass: several passes (the shortest rows together), the same scores."""
    lm = lm_of(family)
    ts = all_targets(lm)
    layers = list(range(LAYERS))
    together, cleans = screen_targets(lm, ts, layers)
    shapes, handle = passes_counted(lm)
    try:
        apart, split = screen_targets(lm, ts, layers, Walks(lm, budget=12 * token_bytes(lm)))
    finally:
        handle.remove()
    assert 1 < len(shapes) < len(ts) and all(n * width <= 12 for n, width in shapes), shapes
    for a, b, ca, cb in zip(apart, together, split, cleans, strict=True):
        close(a, b)
        close(ca.acts, cb.acts)


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
        close(g.acts, want.acts)
        assert g.rms.keys() == want.rms.keys() and bool(g.rms) == (family == "Gemma-3")
        for l in want.rms:
            assert not g.rms[l].requires_grad
            assert g.rms[l].shape == want.rms[l].shape
            close(g.rms[l], want.rms[l])
        assert (g.cache is None) == (want.cache is None) == (lm.masked or t.ids.shape[1] == 1)
        for (gk, gv), (wk, wv) in zip(g.cache or [], want.cache or [], strict=True):
            assert gk.grad_fn is None and gv.grad_fn is None and not gk.requires_grad
            assert gk.shape == wk.shape == (1, wk.shape[1], t.ids.shape[1] - 1, wk.shape[3])
            close(gk, wk)
            close(gv, wv)
    if not lm.masked:
        assert any(g.cache is not None for g in got) and any(g.cache is None for g in got)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_ig_from_the_screens_cleans_equals_ig_from_clean_runs(family):
    lm = lm_of(family)
    ts = all_targets(lm)
    _, cleans = screen_targets(lm, ts, list(range(LAYERS)))
    jobs = [(t, [1, 4]) for t in ts]
    ig = kn.IG(steps=6, rule="gauss_legendre")
    for g, w in zip(fast.attribute_targets(lm, jobs, ig, cleans=cleans), fast.attribute_targets(lm, jobs, ig),
                    strict=True):
        assert w[[1, 4]].abs().sum(1).gt(0).all()
        close(g, w)


def counted_clean_runs(monkeypatch) -> list:
    """The targets of each clean run the fast path starts from here on (alone or several a pass)."""
    calls = []
    real, several = fast.clean_run, fast.clean_runs

    def counted(lm, t):
        calls.append(t)
        return real(lm, t)

    def counted_several(lm, ts):
        calls.extend(ts)
        return several(lm, ts)

    monkeypatch.setattr(fast, "clean_run", counted)
    monkeypatch.setattr(fast, "clean_runs", counted_several)
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
    assert len(calls) == len(pair_targets(lm))  # the pair-by-pair path still starts from clean runs
    for p, g, w in zip(prompts, got, want):
        scale = float(w.abs().max())
        assert scale > 0
        # stacked passes (kn.ig.stacked) sum in another order than the pair-by-pair ones: float32 rounding
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5 * scale, msg=f"{family} {p!r}")
        assert torch.equal(g.abs().sum(1) > 0, w.abs().sum(1) > 0), p  # the same screened layers
    calls.clear()
    batch_scores(lm, prompts, answers, kn.IG(steps=2, screen=LAYERS))  # no screen: clean runs
    assert len(calls) == len(pair_targets(lm))


@pytest.mark.parametrize("family", ["GPT-2", "BERT"])
def test_an_answer_position_intervention_acts_at_each_rows_answer(family):
    """Under `kn.scaled(positions="answer")` the padded pass scores each token as its own unpadded pass does
    (a causal row's answer is not the batch's last slot)."""
    lm = lm_of(family)
    ts = all_targets(lm)
    layers = list(range(LAYERS))
    with kn.scaled(lm, [(1, 0), (1, 5), (2, 7)], 3.0):
        got = grad_x_act_targets(lm, ts, layers)
        alone = [grad_x_act_targets(lm, [t], layers)[0] for t in ts]
    plain = grad_x_act_targets(lm, ts, layers)
    for g, a, p in zip(got, alone, plain, strict=True):
        close(g, a)
        assert not torch.allclose(g, p)  # the intervention acted
