"""Shared output-layer walks (`kn.ig.walks`, `kn.attribution.batch_scores`): the per-row-gold head gradient
against autograd over the full softmax, and the batched scores against `kn.scores` pair by pair (prompts of
different lengths, multi-token answers, screened IG's layers per prompt), with the walks counted."""
import pytest
import torch

import kn
from kn.attribution import batch_scores
from kn.checks import ArgumentError
from kn.ig import fast, head
from kn.ig.walks import Walks
from kn.testing import tiny_lm
from kn.tokens import targets

LAYERS = 6  # so that a screen has something to leave out
CAUSAL = (["Paris is the capital of", "the city of Paris is located in the country of", "Paris is located"],
          ["France", "France", "in France"])
MASKED = (["Paris is the capital of [MASK] .", "the city of Paris is located in the country of [MASK] .",
           "Paris is located [MASK] ."], ["France", "France", "in France"])
SETTINGS = [kn.IG(steps=4), kn.IG(steps=6, rule="gauss_legendre", screen=2), kn.GradXAct(), kn.Activation()]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.mark.parametrize("cap", [None, 0.7])
@pytest.mark.parametrize("bias", [False, True])
def test_per_row_gold_gradient_equals_autograd(cap, bias):
    # chunks of 5 over a vocabulary of 23 (a ragged last chunk), logits large enough that the running max
    # must rescale; golds repeat and differ row to row
    g = torch.Generator().manual_seed(1)
    h = torch.randn(7, 6, generator=g) * 3
    W, b = torch.randn(23, 6, generator=g) * 2, (torch.randn(23, generator=g) if bias else None)
    gold = torch.tensor([3, 0, 22, 3, 9, 0, 3])
    hh = h.clone().requires_grad_(True)
    u = hh @ W.T + (b if bias else 0)
    z = u if cap is None else cap * torch.tanh(u / cap)
    torch.softmax(z, -1).gather(1, gold[:, None]).sum().backward()
    torch.testing.assert_close(head.gold_prob_grad(h, W, b, gold, cap, chunk=5), hh.grad, rtol=1e-5, atol=1e-7)
    one = head.gold_prob_grad(h, W, b, 3, cap, chunk=5)  # an int gold: every row's
    assert torch.equal(one, head.gold_prob_grad(h, W, b, torch.full((7,), 3), cap, chunk=5))


@pytest.mark.parametrize("cap", [None, 30.0])
@pytest.mark.parametrize("bias", [False, True])
def test_bfloat16_walk_is_within_a_bfloat16_rounding_of_float64_autograd(cap, bias):
    # top logits from 24 to 40 (where a bfloat16 logit is off by up to 0.06, so a plain bfloat16 product misses this
    # bound 10x) and rows whose gold holds from under 1% to over 90% of the mass (where 1 - P(gold) cancels);
    # the oracle: autograd over the full softmax in float64
    g = torch.Generator().manual_seed(2)
    V, d, B = 3001, 64, 12
    W = torch.randn(V, d, generator=g, dtype=torch.float64) / d ** 0.5
    gold = torch.tensor([5, 5, 17, 3000, 2048, 7, 7, 7, 100, 2047, 1, 0])
    h = torch.randn(B, d, generator=g, dtype=torch.float64) * 7
    h += W[gold] * torch.linspace(14, 34, B, dtype=torch.float64)[:, None]  # the gold nearer the top, by degrees
    b = torch.randn(V, generator=g, dtype=torch.float64) * 0.5 if bias else None
    Wb = W.bfloat16()  # the weights as a bfloat16 model holds them
    hh = h.bfloat16().double().requires_grad_(True)
    u = hh @ Wb.double().T + (b if bias else 0)
    z = u if cap is None else cap * torch.tanh(u / cap)
    p = torch.softmax(z, -1).gather(1, gold[:, None])
    p.sum().backward()
    assert p.min() < 0.01 and p.max() > 0.9
    got = head.gold_prob_grad_bf16(h.float(), Wb, None if b is None else b.float(), gold, cap, chunk=512)
    err = (got.double() - hh.grad).norm(dim=1).max() / hh.grad.norm(dim=1).max()
    assert err < 5e-3, err
    assert head.GRADS["bfloat16"] is head.gold_prob_grad_bf16


def queries(lm):
    return MASKED if lm.masked else CAUSAL


def walks_counted(monkeypatch) -> list[int]:
    """The rows of each output-layer walk from here on."""
    rows = []
    real = head.softmax_sums

    def counted(h, *a, **kw):
        rows.append(h.shape[0])
        return real(h, *a, **kw)

    monkeypatch.setattr(head, "softmax_sums", counted)
    return rows


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "BERT", "BLOOM", "Gemma-2"])
@pytest.mark.parametrize("settings", SETTINGS, ids=["ig", "ig-screen", "gradxact", "activation"])
def test_batch_scores_equal_scores_pair_by_pair(family, settings, monkeypatch):
    lm = tiny_lm(family, num_hidden_layers=LAYERS)
    prompts, answers = queries(lm)
    assert [len(targets(lm, p, a)) for p, a in zip(prompts, answers)] == [1, 1, 2]  # the premise
    rows = walks_counted(monkeypatch)
    got = batch_scores(lm, prompts, answers, settings)
    shared = len(rows)
    want = [kn.scores(lm, p, a, settings) for p, a in zip(prompts, answers)]
    assert len(got) == len(want) == 3
    for p, g, w in zip(prompts, got, want):
        scale = float(w.abs().max())
        assert scale > 0
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6 * scale, msg=f"{family} {p!r}")
        assert kn.coarse(g, 0.2) == kn.coarse(w, 0.2), p
        assert torch.equal(g.abs().sum(1) > 0, w.abs().sum(1) > 0), p  # the same screened layers
    if isinstance(settings, kn.Activation):
        assert shared == 0 and len(rows) == 0  # no walk: scored pair by pair
    else:  # one walk for all the pairs' answer tokens (and one more for IG's screen) instead of one per pass
        assert shared == (2 if getattr(settings, "screen", None) else 1), rows
        assert len(rows) - shared >= 4


def test_the_screen_stays_per_prompt():
    """Screened IG keeps each prompt's own layers (they differ here), among the layers given."""
    lm = tiny_lm("GPT-2", num_hidden_layers=LAYERS)
    prompts, answers = CAUSAL
    ig, given = kn.IG(steps=4, screen=1), [0, 2, 3, 5]
    got = batch_scores(lm, prompts, answers, ig, layers=given)
    kept = [[l for l in range(lm.n_layers) if s[l].abs().sum() > 0] for s in got]
    assert all(len(k) == 1 and k[0] in given for k in kept)
    assert len({k[0] for k in kept}) > 1, kept  # else the test shows nothing
    for p, a, s in zip(prompts, answers, got):
        torch.testing.assert_close(s, kn.scores(lm, p, a, ig, layers=given), rtol=0, atol=1e-6 * float(s.abs().max()))


@pytest.mark.parametrize("max_rows,budget", [(0, 1.5e9), (30, 1.5e9), (10_000, 1.0)])
def test_caps_split_the_walks_not_the_scores(max_rows, budget, monkeypatch):
    """Passes of 4 steps x 6 layers = 24 rows: a cap of 0 rows or of 1 byte walks each pass alone, 30 rows
    one pass per walk too; the scores stay those of one shared walk."""
    lm = tiny_lm("Llama", num_hidden_layers=LAYERS)
    prompts, answers = CAUSAL
    ts = [t for p, a in zip(prompts, answers) for t in targets(lm, p, a)]
    jobs = [(t, list(range(lm.n_layers))) for t in ts]
    ig = kn.IG(steps=4)
    together = fast.attribute_targets(lm, jobs, ig)
    rows = walks_counted(monkeypatch)
    apart = fast.attribute_targets(lm, jobs, ig, Walks(lm, max_rows=max_rows, budget=budget))
    assert rows == [24] * len(ts)
    for a, b in zip(apart, together):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * float(b.abs().max()))


def test_passes_of_one_token_share_a_walk(monkeypatch):
    """batch_size=5: the 24 rows of a token in 5 passes (4 + 1 of a growing batch's rows), walked once."""
    lm = tiny_lm("GPT-2", num_hidden_layers=LAYERS)
    prompts, answers = CAUSAL
    ig = kn.IG(steps=4, batch_size=5)
    rows = walks_counted(monkeypatch)
    got = batch_scores(lm, prompts[:1], answers[:1], ig)[0]
    assert rows == [24]
    want = kn.scores(lm, prompts[0], answers[0], ig)
    assert rows[1:] == [5, 5, 5, 5, 4]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6 * float(want.abs().max()))


def test_arguments():
    lm = tiny_lm("GPT-2")
    prompts, _ = CAUSAL
    one = batch_scores(lm, prompts[:2], "France", kn.GradXAct())  # one answer for every prompt
    for s, p in zip(one, prompts):
        torch.testing.assert_close(s, kn.grad_x_act(lm, p, "France"), rtol=0, atol=1e-6 * float(s.abs().max()))
    assert batch_scores(lm, [], [], kn.IG(steps=2)) == []
    with pytest.raises(ArgumentError, match="2 prompts but 1 answers"):
        batch_scores(lm, prompts[:2], ["France"])


@pytest.mark.parametrize("family", ["GPT-2", "Gemma-2"])  # Gemma-2: a final logit softcap
def test_bfloat16_head_scores_match_float32_head_scores(family, monkeypatch):
    # IG with head_dtype="bfloat16" through kn.attribute and the shared walks of batch_scores: the same
    # scores as the float32 head's up to a bfloat16 rounding of the gradient, from the bfloat16 kernel
    lm = tiny_lm(family, num_hidden_layers=LAYERS)
    prompts, answers = queries(lm)
    ig = kn.IG(steps=4, rule="gauss_legendre")
    exact = batch_scores(lm, prompts, answers, ig)
    calls = []
    real = head.gold_prob_grad_bf16
    monkeypatch.setitem(head.GRADS, "bfloat16", lambda *a, **k: calls.append(1) or real(*a, **k))
    fast_ = batch_scores(lm, prompts, answers, kn.IG(steps=4, rule="gauss_legendre", head_dtype="bfloat16"))
    for a, b in zip(exact, fast_):
        assert (a - b).abs().max() <= 5e-3 * a.abs().max() and not torch.equal(a, b)
    one = kn.attribute(lm, prompts[0], answers[0], ig, head_dtype="bfloat16")
    assert (one - exact[0]).abs().max() <= 5e-3 * exact[0].abs().max()
    assert len(calls) >= 2
