"""The family table, loading, tokenization and clear errors."""
import pytest
import torch

import kn
from kn import arch, hooks
from kn.testing import MASKED, TINY, tiny_lm

# The neuron site of every family, pinned: the module whose *input* is the neuron activation.
SITES = {
    "BERT": "bert.encoder.layer.1.output.dense",
    "RoBERTa": "roberta.encoder.layer.1.output.dense",
    "XLM-R": "roberta.encoder.layer.1.output.dense",
    "DistilBERT": "distilbert.transformer.layer.1.ffn.lin2",
    "ELECTRA": "electra.encoder.layer.1.output.dense",
    "GPT-2": "transformer.h.1.mlp.c_proj",
    "GPT-NeoX": "gpt_neox.layers.1.mlp.dense_4h_to_h",
    "BLOOM": "transformer.h.1.mlp.dense_4h_to_h",
    "OPT": "model.decoder.layers.1.fc2",
    "Llama": "model.layers.1.mlp.down_proj",
    "Mistral": "model.layers.1.mlp.down_proj",
    "Qwen2": "model.layers.1.mlp.down_proj",
    "Gemma": "model.layers.1.mlp.down_proj",
    "Gemma-2": "model.layers.1.mlp.down_proj",
    "Gemma-3": "model.layers.1.mlp.down_proj",
}


def test_every_family_has_a_pinned_site():
    assert set(SITES) == {f.name for f in arch.FAMILIES} == set(TINY)


@pytest.mark.parametrize("family", list(TINY))
def test_site_names_and_widths(family):
    lm = tiny_lm(family)
    assert lm.family.name == family and lm.masked == (family in MASKED)
    names = {m: n for n, m in lm.model.named_modules()}
    assert names[arch.down_proj(lm.model, lm.family, 1)] == SITES[family]
    cfg = lm.model.config
    width = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or \
        getattr(cfg, "ffn_dim", None) or getattr(cfg, "hidden_dim", None) or 4 * cfg.hidden_size
    assert lm.width == width
    assert arch.value_slots(lm.model, lm.family, 0).shape == (lm.width, lm.model.get_input_embeddings().weight.shape[1])
    prompt = "Paris is the capital of [MASK] ." if lm.masked else "Paris is the capital of"
    assert kn.probe(lm, prompt, k=3)
    assert hooks.count(lm.model) == 0


@pytest.mark.parametrize("family", ["BERT", "GPT-2", "OPT", "Gemma-3"])
def test_lm_site_accessors_follow_the_family_table(family):
    lm = tiny_lm(family)
    assert lm.blocks == arch.blocks(lm.model, lm.family) and lm.head is lm.model.get_output_embeddings()
    for l in range(lm.n_layers):
        assert lm.down_proj(l) is arch.down_proj(lm.model, lm.family, l)
        assert lm.post_ffn_norm(l) is arch.post_ffn_norm(lm.model, lm.family, l)
        assert lm.residual_norm(l) is arch.residual_norm(lm.model, lm.family, l)
        assert lm.ffn_in(l) is arch.ffn_in(lm.model, lm.family, l)
        assert torch.equal(lm.value_slots(l), arch.value_slots(lm.model, lm.family, l))
    assert (lm.post_ffn_norm(0) is not None) == (family == "Gemma-3")


def test_check_layers():
    lm = tiny_lm("GPT-2")
    assert lm.check_layers() == [0, 1, 2] and lm.check_layers(-1) == [2] and lm.check_layers([2, 0, -3]) == [0, 2]
    for bad in ([3], [-4], ["1"], [1.0]):
        with pytest.raises(ValueError, match=r"out of range: tiny-GPT-2 has 3 layers \(0..2\)"):
            lm.check_layers(bad)


def test_gated_site_is_act_gate_times_up():
    lm = tiny_lm("Llama")
    mlp = lm.model.model.layers[0].mlp
    seen = {}
    def read_site(layer, act):
        seen[layer] = act.clone()

    def read_input(module, args, kwargs):
        seen["x"] = args[0].clone()

    with hooks.hooked(hooks.site_hooks(lm, read_site, [0]) + [(mlp, "pre", read_input)]):
        kn.probe(lm, "Paris is the capital of")
    x = seen["x"]
    torch.testing.assert_close(seen[0], mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))


def test_no_hook_left_behind_after_kernels():
    lm = tiny_lm("Gemma-3")
    kn.attribute(lm, "Paris is the capital of", "France", steps=4)
    kn.attribute(lm, "Paris is the capital of", "France", steps=4, reference=True)
    kn.locate(lm, ["Paris is the capital of"] * 3, "France", steps=4)
    with pytest.raises(ValueError):
        kn.attribute(lm, "Paris is the capital of", "", steps=4)
    assert hooks.count(lm.model) == 0
    assert all(p.requires_grad for p in lm.model.parameters())


def test_probe_and_answer_prob_agree():
    lm = tiny_lm("GPT-2")
    top = kn.probe(lm, "Paris is the capital of", k=5)
    assert sorted((p.prob for p in top), reverse=True) == [p.prob for p in top]
    assert kn.answer_prob(lm, "Paris is the capital of", top[0].token) == pytest.approx(top[0].prob, rel=1e-5)
    assert kn.answer_rank(lm, "Paris is the capital of", top[1].token) == 1


def test_trailing_space_belongs_to_the_answer():
    lm = tiny_lm("Llama")
    a = kn.attribute(lm, "Paris is the capital of", "France", steps=4)
    b = kn.attribute(lm, "Paris is the capital of ", "France", steps=4)
    assert torch.equal(a, b)


@pytest.mark.parametrize("prompt", ["Paris is the capital of France .", "[MASK] is the capital of [MASK] ."])
def test_masked_prompt_needs_one_mask(prompt):
    lm = tiny_lm("BERT")
    with pytest.raises(ValueError, match=r"exactly one \[MASK\]"):
        kn.attribute(lm, prompt, "France")
    with pytest.raises(ValueError, match=r"exactly one \[MASK\]"):
        kn.probe(lm, prompt)


def test_causal_prompt_rejects_mask():
    with pytest.raises(ValueError, match="causal"):
        kn.probe(tiny_lm("GPT-2"), "Paris is the capital of [MASK]")


@pytest.mark.parametrize("answer", ["", "   ", None])
def test_empty_answer(answer):
    with pytest.raises(ValueError, match="answer (is empty|must be a string)"):
        kn.attribute(tiny_lm("GPT-2"), "Paris is the capital of", answer)


def test_unrepresentable_answer():
    with pytest.raises(ValueError, match="cannot represent"):
        kn.attribute(tiny_lm("BERT"), "Paris is the capital of [MASK] .", "Zanzibar")


def test_layer_out_of_range():
    with pytest.raises(ValueError, match=r"out of range.*3 layers"):
        kn.attribute(tiny_lm("GPT-2"), "Paris is the capital of", "France", layers=[3])


def test_bad_steps_and_rule():
    lm = tiny_lm("GPT-2")
    with pytest.raises(ValueError, match="steps"):
        kn.attribute(lm, "Paris is the capital of", "France", steps=0)
    with pytest.raises(ValueError, match="riemann_left"):
        kn.attribute(lm, "Paris is the capital of", "France", rule="trapezoid")


def test_unknown_model_name(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub read the variable when it was imported: without this the lookup waits on the
    # network (about 20 s of retries here) before failing
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("KN_CACHE", str(tmp_path))
    with pytest.raises(kn.ModelNotFoundError, match="gemma-3-270m"):
        kn.load("no-such-model-xyz")


def test_unsupported_family():
    from transformers import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8, vocab_size=50))
    with pytest.raises(kn.UnsupportedModelError, match="Gemma-3"):
        kn.wrap(model, None)


def test_locate_needs_enough_prompts():
    with pytest.raises(ValueError, match="min_prompts"):
        kn.locate(tiny_lm("GPT-2"), ["Paris is the capital of"] * 2, "France", steps=4)


def test_refine_rule():
    sets = [{(0, 1), (1, 2)}, {(0, 1)}, {(0, 1), (1, 2)}, {(0, 1)}, {(1, 2), (2, 2)}]
    assert kn.refine(sets, share=0.7) == [(0, 1)]  # needs max(3.5 -> 4, 3) prompts
    assert kn.refine(sets, share=0.5) == [(0, 1), (1, 2)]  # needs max(2.5 -> 3, 3)
    assert kn.coarse(torch.tensor([[1.0, 0.3, -5.0], [0.1, 0.2, 0.0]])) == {(0, 0), (0, 1), (1, 1)}


def test_tune_share_moves_towards_two_to_five():
    # 10 facts, 5 prompts each; a fact has neurons found in 5, 4 or 3 prompts
    facts = []
    for f in range(10):
        sets = [set() for _ in range(5)]
        for n, k in enumerate([5, 5, 5, 4, 4, 4, 4, 3]):
            for p in range(k):
                sets[p].add((f, n))
        facts.append(sets)
    share, kns = kn.tune_share(facts, 0.7)
    assert share == 0.85 and all(len(k) == 3 for k in kns)  # 7 neurons at p <= 0.8, 3 at 0.85
