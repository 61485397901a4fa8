"""AMIG against an oracle written here from the definition: corrupted copies built from the tokenizer,
their mean site activation read with plain torch hooks, IG from that baseline by captum."""
import pytest
import torch
from captum.attr import IntegratedGradients

import kn
from kn.testing import tiny_lm
from kn.tokens import targets

from test_attribution import plant, prompt_of, rel, site_function

FAMILIES = ["BERT", "GPT-2", "Llama"]


def oracle_context(lm, prompt, answer_ids, j):
    """(ids, prompt_len, pos) predicting answer token j, written from the tokenizer."""
    tok = lm.tokenizer
    if lm.masked:
        left, right = prompt.split("[MASK]")
        ids = tok(left + " ".join(["[MASK]"] * len(answer_ids)) + right)["input_ids"]
        start = ids.index(tok.mask_token_id)
        ids[start:start + j] = answer_ids[:j]
        slot = set(range(start, start + len(answer_ids)))
        keep = [i for i in range(len(ids)) if i not in slot]
        return ids, keep, start + j
    prefix = tok(prompt)["input_ids"]
    return prefix + answer_ids[:j], list(range(len(prefix))), len(prefix) + j - 1


def oracle_scores(lm, prompt, answer, steps=20, every_position=False):
    gold = [t.gold for t in targets(lm, prompt, answer)]
    total = 0
    for j, t in enumerate(targets(lm, prompt, answer)):
        ids, keep, pos = oracle_context(lm, prompt, gold, j)
        assert ids == t.ids[0].tolist() and pos == t.pos  # same prompt, built independently
        corrupt = [i for i in keep if ids[i] not in lm.tokenizer.all_special_ids]
        base, _ = oracle_baseline_at(lm, ids, corrupt if not every_position else range(len(ids)), pos)
        per_layer = []
        for layer in range(lm.n_layers):
            xl = _site(lm, ids, pos, layer)
            f = site_function(lm, t, layer)
            per_layer.append(IntegratedGradients(f).attribute(
                xl[None], baselines=base[layer][None], n_steps=steps, method="riemann_left")[0])
        total = total + torch.stack(per_layer)
    return total


def oracle_baseline_at(lm, ids, where, pos):
    tok = lm.tokenizer
    corrupt = tok.mask_token_id if lm.masked else tok.eos_token_id
    where = list(where)
    rows = torch.tensor([ids] * len(where))
    rows[torch.arange(len(where)), torch.tensor(where)] = corrupt
    acts = {}
    handles = [lm.down_proj(l).register_forward_pre_hook(
        lambda m, args, l=l: acts.__setitem__(l, args[0][:, pos].mean(0))) for l in range(lm.n_layers)]
    try:
        with torch.no_grad():
            lm.model(input_ids=rows, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return torch.stack([acts[l] for l in range(lm.n_layers)]), len(where)


def _site(lm, ids, pos, layer):
    seen = {}
    h = lm.down_proj(layer).register_forward_pre_hook(lambda m, args: seen.__setitem__("a", args[0][0, pos]))
    try:
        with torch.no_grad():
            lm.model(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        h.remove()
    return seen["a"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("reference", [False, True])
def test_amig_equals_the_definition(family, reference):
    lm = tiny_lm(family)
    ours = kn.attribute(lm, prompt_of(lm), "France", baseline="amig", reference=reference)
    theirs = oracle_scores(lm, prompt_of(lm), "France")
    assert rel(ours, theirs) < 1e-5
    assert rel(ours, kn.attribute(lm, prompt_of(lm), "France")) > 1e-2  # the baseline matters


@pytest.mark.parametrize("family", FAMILIES)
def test_multi_token_answer_gets_a_baseline_per_token(family):
    lm = tiny_lm(family)
    prompt = "Paris is located [MASK] ." if lm.masked else "Paris is located"
    ours = kn.attribute(lm, prompt, "in France", baseline="amig")
    assert len(targets(lm, prompt, "in France")) == 2
    assert rel(ours, oracle_scores(lm, prompt, "in France")) < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_code_variants(family):
    lm = tiny_lm(family)
    p = prompt_of(lm)
    t = targets(lm, p, "France")[0]
    n = t.ids.shape[1]
    # every position corrupted: one copy per token, specials and the mask slot included
    assert len(kn.AMIG(positions="all").corrupted(lm, t)) == n
    specials = sum(v in lm.tokenizer.all_special_ids for v in t.ids[0].tolist())
    assert len(kn.AMIG().corrupted(lm, t)) == n - specials
    ours = kn.attribute(lm, p, "France", baseline="amig-all")
    base, _ = oracle_baseline_at(lm, t.ids[0].tolist(), range(n), t.pos)
    assert torch.allclose(kn.BASELINES["amig-all"](lm, t), base, atol=1e-6)
    assert rel(ours, kn.attribute(lm, p, "France", baseline="amig")) > 1e-3
    # multiplier "x": the same integrated gradient times x instead of x - b
    b = kn.BASELINES["amig"](lm, t)
    x = kn.activations(lm, p, "France")
    xb = kn.attribute(lm, p, "France", baseline="amig")
    xx = kn.attribute(lm, p, "France", baseline="amig", multiplier="x")
    ok = (x - b).abs() > 1e-3 * (x - b).abs().max()
    assert torch.allclose((xx * (x - b))[ok], (xb * x)[ok], rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_completeness_from_the_baseline(family):
    # sum of scores = P(x) - P(b) at the attributed layer; a model with larger weights than the default
    # init, so that P moves well above float32 noise
    lm = tiny_lm(family, initializer_range=0.2)
    p = prompt_of(lm)
    t = targets(lm, p, "France")[0]
    b = kn.BASELINES["amig"](lm, t)
    p_clean = kn.answer_prob(lm, p, "France")
    for layer in range(lm.n_layers):
        with torch.no_grad():
            p_base = float(site_function(lm, t, layer)(b[layer][None]))
        s = kn.attribute(lm, p, "France", baseline="amig", steps=64, rule="gauss_legendre", layers=[layer])
        delta = p_clean - p_base
        assert abs(delta) > 1e-4
        assert abs(float(s.sum()) - delta) < 1e-3 * abs(delta), (layer, float(s.sum()), delta)


@pytest.mark.parametrize("family", FAMILIES)
def test_planted_neuron_still_ranks_first(family):
    # AMIG credits what the prompt's tokens cause: plant into the neuron of layer 1 that the intact
    # prompt drives furthest beyond its corrupted copies (a neuron that fires whatever the prompt says
    # gets little, one the copies drive harder gets a negative score: both by design)
    lm = tiny_lm(family, initializer_range=0.2)
    t = targets(lm, prompt_of(lm), "France")[0]
    x = kn.activations(lm, prompt_of(lm), "France")[1]
    planted = plant(lm, 1, index=int(((x - kn.BASELINES["amig"](lm, t)[1]) * x.sign()).argmax()))
    scores = kn.attribute(lm, prompt_of(lm), "France", baseline="amig")
    assert divmod(int(scores.argmax()), lm.width) == planted


def test_amig_errors_say_what_to_do():
    lm = tiny_lm("GPT-2")
    lm.tokenizer.eos_token = None
    with pytest.raises(ValueError, match=r"no EOS token.*kn.AMIG\(token="):
        kn.attribute(lm, prompt_of(lm), "France", baseline="amig")
    eos = kn.AMIG(token="<eos>").corruption_id(lm)
    assert eos == 6 and kn.AMIG(token=6).corruption_id(lm) == 6
    with pytest.raises(ValueError, match="not a token"):
        kn.attribute(lm, prompt_of(lm), "France", baseline=kn.AMIG(token="zebra"))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        kn.attribute(lm, prompt_of(lm), "France", baseline=kn.AMIG(token=10 ** 6))
    with pytest.raises(ValueError, match="positions"):
        kn.AMIG(positions="some")
    with pytest.raises(ValueError, match="multiplier"):
        kn.IG(multiplier="b")
    with pytest.raises(ValueError, match="no token AMIG can corrupt"):
        kn.attribute(lm, "<bos>", "France", baseline=kn.AMIG(token=6))


def test_amig_settings_round_trip():
    for ig in (kn.IG(baseline="amig"), kn.IG(baseline=kn.AMIG(token="<eos>", positions="all"), multiplier="x")):
        assert kn.settings.from_dict(ig.to_dict()) == ig
