"""Causal tracing (`kn.edits.tracing`) and rome's layer="trace", on tiny random models.

Oracles are the test's own: the indirect effects recomputed from the definition one noise sample at a
time, with plain torch forward hooks on a module each family's row below names (not kn's family
table); a planted fact whose answer one layer's FFN writes at the subject's last token.
"""
from __future__ import annotations

import pytest
import torch

from kn import edits
from kn.edits import tracing
from kn.hooks import count as hook_count
from kn.testing import tiny_lm

# family -> (the tiny model's settings, the module whose output is the FFN (MLP sublayer) output of layer l)
FFN_OUT = {
    "GPT-2": (dict(n_layer=4), lambda m, l: m.transformer.h[l].mlp),
    "GPT-NeoX": (dict(num_hidden_layers=4), lambda m, l: m.gpt_neox.layers[l].mlp),
    "BLOOM": (dict(n_layer=4), lambda m, l: m.transformer.h[l].mlp.dense_4h_to_h),  # BloomMLP adds the residual
    "OPT": (dict(num_hidden_layers=4), lambda m, l: m.model.decoder.layers[l].fc2),
    "Llama": (dict(num_hidden_layers=4), lambda m, l: m.model.layers[l].mlp),
    "Gemma-3": (dict(num_hidden_layers=4, layer_types=["sliding_attention"] * 3 + ["full_attention"]),
                lambda m, l: m.model.layers[l].mlp),
}
# (prompt, subject, answer, the subject's token span in "<bos> w1 w2 ..." of the tiny word-level tokenizer)
CASES = [("the capital of France is", "capital of France", " Paris", (2, 5)),
         ("Paris is the capital of", "Paris", " France", (1, 2))]


def _lm(family):
    kw, _ = FFN_OUT[family]
    return tiny_lm(family, initializer_range=0.2, **kw)


def _top_word(lm, prompt):
    """The random model's own most likely next word (not a special token): its P is far from 0, so are
    the effects."""
    from kn.testing import SPECIALS

    with torch.no_grad():
        logits = lm.model(lm.tokenizer(prompt, return_tensors="pt").input_ids).logits[0, -1]
    return " " + lm.tokenizer.convert_ids_to_tokens(len(SPECIALS) + int(logits[len(SPECIALS):].argmax()))


def _brute(lm, family, prompt, span, answer, samples, window, seed=0, noise=3.0):
    """The indirect effects by definition, one noise sample and one forward pass at a time."""
    model, tok = lm.model, lm.tokenizer
    ffn = FFN_OUT[family][1]
    n = model.config.num_hidden_layers
    ids = tok(prompt, return_tensors="pt").input_ids
    gold = tok(answer, add_special_tokens=False).input_ids[0]
    start, end = span
    last = end - 1
    emb = model.get_input_embeddings()
    with torch.no_grad():
        sigma = emb(torch.arange(emb.weight.shape[0])[None])[0].double().std(unbiased=False).item()
    draw = torch.randn(samples, end - start, emb.weight.shape[1], generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)
    clean = {}

    def p_answer(hooks):
        handles = [mod.register_forward_hook(fn) for mod, fn in hooks]
        try:
            with torch.no_grad():
                return torch.softmax(model(ids).logits[0, -1].float(), -1)[gold].item()
        finally:
            for h in handles:
                h.remove()

    def keep(l):
        return lambda mod, args, out: clean.__setitem__(l, out.reshape(-1, out.shape[-1])[last].clone())

    def noisy(s):
        def fn(mod, args, out):
            out = out.clone()
            out[0, start:end] += (noise * sigma * draw[s]).to(out.dtype)
            return out
        return fn

    def put_back(l):
        def fn(mod, args, out):
            out = out.clone()
            out.reshape(-1, out.shape[-1])[last] = clean[l]  # batch 1: [seq, hidden] rows, flat FFNs too
            return out
        return fn

    p_answer([(ffn(model, l), keep(l)) for l in range(n)])
    low = sum(p_answer([(emb, noisy(s))]) for s in range(samples)) / samples
    effects = []
    for l in range(n):
        near = [j for j in range(n) if l - window // 2 <= j < l + (window + 1) // 2]
        high = sum(p_answer([(emb, noisy(s))] + [(ffn(model, j), put_back(j)) for j in near]) for s in range(samples))
        effects.append(high / samples - low)
    return torch.tensor(effects, dtype=torch.float64)


@pytest.mark.parametrize("family", sorted(FFN_OUT))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_effects_are_the_definition_recomputed_by_brute_force(family, case):
    torch.manual_seed(0)
    prompt, subject, _, span = CASES[case]
    lm = _lm(family)
    answer = _top_word(lm, prompt)
    t = tracing.causal_trace(lm, prompt, subject, answer, samples=3)
    want = _brute(lm, family, prompt, span, answer, samples=3, window=1)
    assert t.subject == span
    assert want.abs().max() > 3e-4  # a comparison that can fail (atol 2e-6)
    torch.testing.assert_close(t.effects, want, rtol=1e-4, atol=2e-6)
    assert t.layer == int(t.effects.argmax())


@pytest.mark.parametrize("window", [2, 3])
def test_a_window_restores_the_layers_around_each_layer(window):
    prompt, subject, _, span = CASES[0]
    lm = _lm("GPT-2")
    answer = _top_word(lm, prompt)
    t = tracing.causal_trace(lm, prompt, subject, answer, samples=2, window=window, seed=3)
    want = _brute(lm, "GPT-2", prompt, span, answer, samples=2, window=window, seed=3)
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(t.effects, want, rtol=1e-4, atol=2e-6)
    one = tracing.causal_trace(lm, prompt, subject, answer, samples=2, window=1, seed=3)
    assert not torch.allclose(one.effects, t.effects)


# -- a planted fact: one layer's FFN writes the answer at the subject's last token ------------------------
PLANT_MODULES = {"GPT-2": lambda m, l: (m.transformer.h[l].mlp.c_fc, m.transformer.h[l].mlp.c_proj),
                 "GPT-NeoX": lambda m, l: (m.gpt_neox.layers[l].mlp.dense_h_to_4h, m.gpt_neox.layers[l].mlp.dense_4h_to_h)}
FACT = ("the capital of France", "France", " Paris")  # the subject ends the prompt: no attention carries it


def _plant(lm, family, layer, i=0, c=20.0, size=30.0):
    """Neuron i of `layer` becomes a key detector for the clean FFN input x at the prompt's last token
    (pre-activation c (cos(x', x) |x'| / |x| - 0.8): on for x, off for a noisy x') whose value slot writes
    the answer's output embedding (size 30 along it)."""
    model, tok = lm.model, lm.tokenizer
    prompt, _, answer = FACT
    fc, proj = PLANT_MODULES[family](model, layer)
    seen = {}
    h = fc.register_forward_pre_hook(lambda m, a: seen.update(x=a[0][0, -1].clone()))
    with torch.no_grad():
        model(tok(prompt, return_tensors="pt").input_ids)
    h.remove()
    x = seen["x"]
    e = model.get_output_embeddings().weight[tok(answer, add_special_tokens=False).input_ids[0]].detach()
    with torch.no_grad():
        if family == "GPT-2":  # Conv1D: weight [in, out]
            fc.weight[:, i], proj.weight[i] = c * x / x.norm() ** 2, size * e / e.norm() / (0.2 * c)
        else:  # nn.Linear: weight [out, in]
            fc.weight[i], proj.weight[:, i] = c * x / x.norm() ** 2, size * e / e.norm() / (0.2 * c)
        fc.bias[i] = -0.8 * c


@pytest.mark.parametrize("family", sorted(PLANT_MODULES))
@pytest.mark.parametrize("layer", range(4))
def test_tracing_finds_the_layer_that_carries_a_planted_fact(family, layer):
    lm = _lm(family)
    _plant(lm, family, layer)
    t = tracing.causal_trace(lm, *FACT)
    assert t.clean > 0.5 and t.layer == layer, t
    assert t.effects[layer] > 0.3 and t.effects[layer] > 3 * t.effects[[l for l in range(4) if l != layer]].max()


def test_tracing_leaves_the_model_and_the_global_rng_alone_and_is_seeded():
    lm = _lm("Llama")
    prompt, subject, answer, _ = CASES[0]
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    a = tracing.causal_trace(lm, prompt, subject, answer)
    assert torch.equal(torch.get_rng_state(), rng)
    b = tracing.causal_trace(lm, prompt, subject, answer)
    c = tracing.causal_trace(lm, prompt, subject, answer, seed=1)
    assert torch.equal(a.effects, b.effects) and (a.layer, a.clean, a.corrupted) == (b.layer, b.clean, b.corrupted)
    assert not torch.equal(a.effects, c.effects)
    now = lm.model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in before.items()) and hook_count(lm.model) == 0


def test_tracing_checks_its_inputs():
    lm = _lm("GPT-2")
    with pytest.raises(ValueError, match="not in the prompt"):
        tracing.causal_trace(lm, "the capital of France is", "Spain", " Paris")
    with pytest.raises(ValueError, match="samples"):
        tracing.causal_trace(lm, "the capital of France is", "France", " Paris", samples=0)
    with pytest.raises(ValueError, match="masked LM"):
        tracing.causal_trace(tiny_lm("BERT"), "the capital of France is [MASK] .", "France", "Paris")


# -- rome, layer="trace" ---------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [0, 2])
def test_rome_with_layer_trace_edits_the_traced_layer(layer):
    """The default layer of a 4-layer model is round(4 / 3) = 1; planted at 0 or 2, the edit goes there."""
    lm = _lm("GPT-2")
    _plant(lm, "GPT-2", layer)
    prompt, subject, old = FACT
    r = edits.Request((prompt,), old, " Rome", subject)
    m = edits.method("rome", layer="trace", steps=5)
    assert m.layers_of(lm, [r]) == [layer]
    w0 = {k: v.clone() for k, v in lm.model.state_dict().items()}
    with edits.edit(lm, m, [r]):
        now = lm.model.state_dict()
        changed = [k for k in now if not torch.equal(now[k], w0[k])]
    assert changed == [f"transformer.h.{layer}.mlp.c_proj.weight"]
    now = lm.model.state_dict()
    assert all(torch.equal(now[k], w0[k]) for k in now) and hook_count(lm.model) == 0
    assert m.touched(lm, [r]) == (0, lm.model.transformer.h[layer].mlp.c_proj.weight.numel())
    assert m.chosen(lm, [r]) == [{"layer": layer}] and edits.method("rome", layer=1).chosen(lm, [r]) == [{"layer": 1}]


def test_rome_layer_setting_values():
    from kn.runs.phases import editing as editing_phase

    assert edits.method("rome").layer is None and edits.method("rome", layer=3).layer == 3  # unchanged
    with pytest.raises(ValueError, match="layer must be"):
        edits.method("rome", layer="tracing")
    with pytest.raises(ValueError, match="layer"):
        edits.method("rome", layer=-1)
    assert editing_phase.options(("rome.layer=trace",)) == {"rome": {"layer": "trace"}}
    with pytest.raises(ValueError, match="per request"):
        edits.method("rome", layer="trace").layer_of(_lm("GPT-2"))
