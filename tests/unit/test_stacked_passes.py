"""Stacked path passes (`kn.ig.stacked`): several answer tokens' passes in one forward pass give the scores of
their passes one token at a time (prompts of different lengths, so padded caches; multi-token answers;
families with and without residual or post-FFN norms), and stacks are cut at STACK_ROWS rows."""
import pytest
import torch

import kn
from kn.ig import fast, stacked
from kn.ig.walks import Walks
from kn.testing import tiny_lm
from kn.tokens import targets

PROMPTS = ["Paris is the capital of", "the city of Paris is located in the country of", "Paris is located",
           "Rome"]
ANSWERS = ["France", "France", "in France", " Italy"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


def jobs(lm):
    ts = [t for p, a in zip(PROMPTS, ANSWERS) for t in targets(lm, p, a)]
    return [(t, list(range(lm.n_layers))) for t in ts]


def stacks_counted(monkeypatch) -> list[int]:
    """The number of tokens in each stacked pass from here on."""
    sizes = []
    real = stacked.pass_forward

    def counted(lm, items, freeze):
        sizes.append(len(items))
        return real(lm, items, freeze)

    monkeypatch.setattr(stacked, "pass_forward", counted)
    return sizes


# Gemma-3 with a sliding window shorter than the longest prompt, in every layer
FAMILIES = {"GPT-2": {}, "Llama": {}, "Gemma-2": {}, "Gemma-3": dict(sliding_window=4, layer_types=None),
            "GPT-NeoX": {}, "Qwen2": {}, "OPT": {}}


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("ig", [kn.IG(steps=3, rule="gauss_legendre"), kn.IG(steps=2, rule="riemann_left",
                                                                           freeze_norm=False)])
def test_a_stack_gives_the_scores_of_its_tokens_one_at_a_time(family, ig, monkeypatch):
    lm = tiny_lm(family, num_hidden_layers=4, **FAMILIES[family])
    js = jobs(lm)
    lengths = {t.ids.shape[1] for t, _ in js}
    assert len(js) >= 5 and len(lengths) >= 3  # the premise: padded caches
    alone = [fast.attribute_targets(lm, [j], ig, Walks(lm, max_rows=0))[0] for j in js]
    sizes = stacks_counted(monkeypatch)
    together = fast.attribute_targets(lm, js, ig)
    assert sizes == [len(js)]
    for a, b in zip(alone, together):
        assert a.abs().max() > 0
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * float(a.abs().max()))


def test_stacks_are_cut_at_stack_rows_and_what_cannot_stack_runs_alone(monkeypatch):
    lm = tiny_lm("Llama", num_hidden_layers=4)
    js = jobs(lm)
    assert len(js) == 5
    ig = kn.IG(steps=2, rule="gauss_legendre")
    want = fast.attribute_targets(lm, js, ig)
    monkeypatch.setattr(fast, "STACK_ROWS", 2 * 8)  # two tokens' rows (4 layers x 2 points each)
    sizes = stacks_counted(monkeypatch)
    got = fast.attribute_targets(lm, js, ig)
    assert sizes == [2, 2]  # and the fifth token alone
    for a, b in zip(want, got):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * float(a.abs().max()))
    sizes.clear()
    fast.attribute_targets(lm, js, kn.IG(steps=2, rule="gauss_legendre", batch_size=8))  # the user's batch: no stack
    assert sizes == []
    clean = kn.ig.clean.clean_run(lm, js[0][0])
    no_cache = kn.ig.clean.Clean(clean.acts, clean.rms, True, None, -1)  # a one-token prompt's
    assert stacked.stackable(lm, clean) and not stacked.stackable(lm, no_cache)
    assert not stacked.stackable(tiny_lm("BLOOM", num_hidden_layers=2), clean)  # its blocks do not grow
    masked = tiny_lm("BERT", num_hidden_layers=2)
    assert not stacked.stackable(masked, kn.ig.clean.clean_run(masked, targets(masked, "Paris is in [MASK] .", "France")[0]))


def test_owners_list_the_rows_present_at_each_block():
    lm = tiny_lm("Llama", num_hidden_layers=3)
    ig = kn.IG(steps=2)
    items = []
    for layers in ([0, 2], [1]):
        p = kn.ig.plan.plan(layers, ig.quadrature(), 100)[0]
        items.append(stacked.Stacked(None, None, None, p))
    rows = stacked.owners(items, 3)
    assert [r.tolist() for r in rows] == [[0, 1], [0, 1, 0, 0], [0, 1, 0, 0, 1, 1], [0, 1, 0, 0, 1, 1, 0, 0]]


@pytest.mark.parametrize("family", ["GPT-2", "Gemma-3", "BERT"])
def test_clean_runs_record_what_clean_run_records(family, monkeypatch):
    lm = tiny_lm(family, num_hidden_layers=3, **FAMILIES.get(family, {}))
    if lm.masked:
        ts = [t for p, a in zip(["Paris is in [MASK] .", "the city of Paris is in [MASK] ."], ["France"] * 2)
              for t in targets(lm, p, a)]
    else:
        ts = [t for t, _ in jobs(lm)]
    monkeypatch.setattr(kn.ig.clean, "CLEAN_TOKENS", 2 * max(t.ids.shape[1] for t in ts))  # passes of two
    for t, c in zip(ts, kn.ig.clean.clean_runs(lm, ts)):
        want = kn.ig.clean.clean_run(lm, t)
        torch.testing.assert_close(c.acts, want.acts, rtol=1e-5, atol=1e-6)
        assert c.rms.keys() == want.rms.keys() and (c.cached, c.pos) == (want.cached, want.pos)
        for l in want.rms:
            torch.testing.assert_close(c.rms[l], want.rms[l], rtol=1e-5, atol=1e-6)
        assert (c.cache is None) == (want.cache is None)
        for (k, v), (wk, wv) in zip(c.cache or [], want.cache or []):
            torch.testing.assert_close(k, wk, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(v, wv, rtol=1e-5, atol=1e-6)
