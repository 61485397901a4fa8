"""The IG kernel against independent oracles: captum, the plain definition, completeness, a planted neuron."""
import ast
from pathlib import Path

import pytest
import torch
from captum.attr import IntegratedGradients

import kn
from kn.hooks import hooked, site_hooks
from kn.ig import reference
from kn.ig.plan import plan
from kn.quadrature import quadrature
from kn.testing import TINY, tiny_lm
from kn.tokens import targets

PROMPT = {True: "Paris is the capital of [MASK] .", False: "Paris is the capital of"}
POST_FFN_NORM = [f for f in TINY if f.startswith("Gemma-")]  # Gemma-2, Gemma-3


def prompt_of(lm):
    return PROMPT[lm.masked]


def site_function(lm, t, layer, freeze=False):
    """f(v) = P(gold) with the answer-position site of `layer` set to v [n, width] (captum's forward).
    freeze: the layer's post-FFN norm keeps its clean scale at that position (written here, for the test)."""
    scale = {}

    def rms(module, u):
        return torch.rsqrt(u.float().pow(2).mean(-1, keepdim=True) + module.eps)

    def read(module, args, out):
        scale["clean"] = rms(module, args[0][0, t.pos])

    def hold(module, args, out):
        new = out.clone()
        new[:, t.pos] = out[:, t.pos] * (scale["clean"] / rms(module, args[0][:, t.pos]))
        return new

    if freeze:
        with torch.no_grad(), hooked([(lm.post_ffn_norm(layer), "post", read)]):
            lm.model(input_ids=t.ids, use_cache=False)

    def f(v):
        def put(l, act):
            act = act.expand(v.shape[0], *act.shape[1:]).clone()
            act[:, t.pos] = v
            return act
        ids = t.ids.expand(v.shape[0], -1)
        hooks = site_hooks(lm, put, [layer]) + ([(lm.post_ffn_norm(layer), "post", hold)] if freeze else [])
        with hooked(hooks):
            logits = lm.model(input_ids=ids, use_cache=False).logits
        return torch.softmax(logits[:, t.pos].float(), -1)[:, t.gold]
    return f


def captum_scores(lm, layer, steps, method, freeze=False):
    t = targets(lm, prompt_of(lm), "France")[0]
    x = kn.activations(lm, prompt_of(lm), "France")[layer][None]
    ig = IntegratedGradients(site_function(lm, t, layer, freeze))
    return ig.attribute(x, baselines=torch.zeros_like(x), n_steps=steps, method=method)[0]


def rel(a, b):
    return float(((a - b).abs().max() / b.abs().max()).detach())


@pytest.mark.parametrize("family", list(TINY))
def test_agrees_with_captum(family):
    # every family captum can run (all 15): the plain site function, so post-FFN norms unfrozen
    lm = tiny_lm(family)
    ours = kn.attribute(lm, prompt_of(lm), "France", steps=20, freeze_norm=False)
    for layer in range(lm.n_layers):
        theirs = captum_scores(lm, layer, 20, "riemann_left")
        assert rel(ours[layer], theirs) < 1e-5, (family, layer)


@pytest.mark.parametrize("family", POST_FFN_NORM)
def test_frozen_norm_agrees_with_captum(family):
    lm = tiny_lm(family)
    ours = kn.attribute(lm, prompt_of(lm), "France", steps=20)  # freeze_norm=True, the default
    for layer in range(lm.n_layers):
        assert rel(ours[layer], captum_scores(lm, layer, 20, "riemann_left", freeze=True)) < 1e-5, layer


@pytest.mark.parametrize("family", ["BERT", "GPT-2", "Gemma-3"])
@pytest.mark.parametrize("rule,captum_method,scale", [
    # captum's trapezoid weights are 1/m with halved ends (they sum to (m - 1) / m); kn's sum to 1
    ("riemann_trapezoid", "riemann_trapezoid", 7 / 6),
    ("gauss_legendre", "gausslegendre", 1.0),
])
def test_other_rules_agree_with_captum(family, rule, captum_method, scale):
    lm = tiny_lm(family)
    ours = kn.attribute(lm, prompt_of(lm), "France", steps=7, rule=rule, freeze_norm=False)
    for layer in range(lm.n_layers):
        assert rel(ours[layer], scale * captum_scores(lm, layer, 7, captum_method)) < 1e-5, (rule, layer)


@pytest.mark.parametrize("family", list(TINY))
def test_fast_path_equals_reference(family):
    lm = tiny_lm(family)
    for answer in ("France", "France Germany"):  # one token, and a teacher-forced two-token answer
        fast = kn.attribute(lm, prompt_of(lm), answer, steps=8)
        ref = kn.attribute(lm, prompt_of(lm), answer, steps=8, reference=True)
        assert ref.abs().max() > 0 and rel(fast, ref) < 1e-5


@pytest.mark.parametrize("family", ["BERT", "BLOOM", "Llama", "Gemma-3"])  # joins after / inside blocks
@pytest.mark.parametrize("rule", list(kn.RULES))
def test_fast_path_equals_reference_for_every_rule(family, rule):
    lm = tiny_lm(family)
    fast = kn.attribute(lm, prompt_of(lm), "France", steps=5, rule=rule)
    ref = kn.attribute(lm, prompt_of(lm), "France", steps=5, rule=rule, reference=True)
    assert ref.abs().max() > 0 and rel(fast, ref) < 1e-5


def test_reference_shares_only_hooks_and_the_family_table():
    """The oracle imports no part of the fast path: besides the hook primitive and `LM` (the family
    table), only the definitions of its inputs (tokens, settings with the quadrature rule, baselines)."""
    tree = ast.parse(Path(reference.__file__).read_text())
    relative = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]
    imported = {node.module or alias.name for node in relative for alias in node.names}
    assert imported <= {"hooks", "models", "tokens", "settings", "baselines"}, imported


def test_plan_covers_every_row_once_in_layer_order():
    q = quadrature("gauss_legendre", 4)
    passes = plan([0, 2, 5], q, batch=5)
    assert [p.n_rows for p in passes] == [5, 5, 2]
    assert [(p.layers, p.counts) for p in passes] == [((0, 2), (4, 1)), ((2, 5), (3, 2)), ((5,), (2,))]
    torch.testing.assert_close(torch.cat([p.points for p in passes]), q.points.float().repeat(3))
    torch.testing.assert_close(torch.cat([p.weights for p in passes]), q.weights.float().repeat(3))
    assert passes[1].batch_sizes(6, grow=True) == [1, 1, 1, 4, 4, 4]
    assert passes[1].batch_sizes(6, grow=False) == [5] * 6


def test_fast_head_matches_model_logits_with_a_strong_softcap():
    # the fast path computes the output layer itself (chunked online softmax); a small final-logit
    # softcap makes tanh bend, so a wrong softcap derivative would show
    lm = tiny_lm("Gemma-2", final_logit_softcapping=0.5)
    with torch.no_grad():
        lm.model.get_output_embeddings().weight.mul_(20)
    fast = kn.attribute(lm, prompt_of(lm), "France", steps=8)
    ref = kn.attribute(lm, prompt_of(lm), "France", steps=8, reference=True)
    assert ref.abs().max() > 0 and rel(fast, ref) < 1e-5


def test_batching_does_not_change_scores():
    lm = tiny_lm("Llama")
    a = kn.attribute(lm, prompt_of(lm), "France", steps=10)
    b = kn.attribute(lm, prompt_of(lm), "France", steps=10, batch_size=7)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)


def test_layers_subset_and_linspace():
    lm = tiny_lm("GPT-2")
    full = kn.attribute(lm, prompt_of(lm), "France", steps=6)
    sub = kn.attribute(lm, prompt_of(lm), "France", steps=6, layers=[1])
    assert sub[0].abs().sum() == 0 and sub[2].abs().sum() == 0
    torch.testing.assert_close(sub[1], full[1], rtol=1e-5, atol=1e-9)
    lin = kn.attribute(lm, prompt_of(lm), "France", steps=6, rule="linspace")
    assert not torch.allclose(lin, full)


def _completeness_gap(lm, layer, steps, freeze):
    prompt = prompt_of(lm)
    p_clean = kn.answer_prob(lm, prompt, "France")
    with kn.suppress(lm, [(layer, i) for i in range(lm.width)]):
        p_base = kn.answer_prob(lm, prompt, "France")
    s = kn.attribute(lm, prompt, "France", steps=steps, layers=[layer], freeze_norm=freeze)
    delta = p_clean - p_base
    return abs(float(s.sum()) - delta) / abs(delta)


@pytest.mark.parametrize("family", ["BERT", "GPT-2", "Llama", "Gemma-3"])
def test_completeness_improves_with_steps(family):
    lm = tiny_lm(family)
    gaps = [_completeness_gap(lm, 1, m, freeze=True) for m in (4, 32, 256)]
    assert gaps[2] < gaps[0] and gaps[2] < 0.02, gaps


def test_gemma3_needs_the_norm_freeze():
    lm = tiny_lm("Gemma-3")
    assert lm.family.post_ffn_norm
    # Real Gemma-3 FFN outputs are large against the norm's eps (where the norm is scale-invariant);
    # a random tiny model's are not, so give it outputs of that scale.
    with torch.no_grad():
        for layer in range(lm.n_layers):
            lm.down_proj(layer).weight.mul_(1000)
    frozen = _completeness_gap(lm, 1, 128, freeze=True)
    plain = _completeness_gap(lm, 1, 128, freeze=False)
    assert frozen < 0.02 and plain > 1.0, (frozen, plain)


def answer_direction(lm, layer, answer="France"):
    """d log P(answer) / d(FFN output of `layer`) at the answer position, unit length."""
    t = targets(lm, prompt_of(lm), answer)[0]
    seen = {}

    def keep(module, args, output):
        output.retain_grad()
        seen["y"] = output

    with hooked([(lm.down_proj(layer), "post", keep)]):
        logits = lm.model(input_ids=t.ids).logits
    torch.log_softmax(logits[0, t.pos], -1)[t.gold].backward()
    d = seen["y"].grad[0, t.pos]
    return d / d.norm()


def plant(lm, layer, answer="France", index=None):
    """Make neuron `index` of `layer` (default its most active) write along d log P(answer) / d(FFN
    output), strongly enough that P(answer) > 0.5 where the model allows; returns (layer, index)."""
    act = kn.activations(lm, prompt_of(lm), answer)[layer]
    idx = int(act.abs().argmax()) if index is None else index
    direction = answer_direction(lm, layer, answer)
    slots = lm.value_slots(layer)
    unit = torch.sign(act[idx]) * direction / direction.norm() / act[idx].abs()
    best = (0.0, 0.0)
    for strength in (1.5 ** k for k in range(30)):  # a post-LN model saturates: keep the best strength
        with torch.no_grad():
            slots[idx] = strength * unit
        best = max(best, (kn.answer_prob(lm, prompt_of(lm), answer), strength))
        if best[0] > 0.5:
            break
    with torch.no_grad():
        slots[idx] = best[1] * unit
    return layer, idx


@pytest.mark.parametrize("family", ["BERT", "GPT-2", "Llama"])
def test_planted_neuron_scores_top(family):
    lm = tiny_lm(family, initializer_range=0.2)  # default init cannot express a confident prediction
    before = kn.answer_prob(lm, prompt_of(lm), "France")
    planted = plant(lm, 1)
    assert before < 0.1 and kn.answer_prob(lm, prompt_of(lm), "France") > 3 * before
    scores = kn.attribute(lm, prompt_of(lm), "France")
    top = divmod(int(scores.argmax()), lm.width)
    assert top == planted
    assert kn.coarse(scores, 0.2) >= {planted}


def test_activations_match_site():
    lm = tiny_lm("Llama")
    t = targets(lm, prompt_of(lm), "France")[0]
    seen = {}
    with hooked(site_hooks(lm, lambda l, a: seen.__setitem__(l, a[0, t.pos].clone()))):
        lm.model(input_ids=t.ids)
    acts = kn.activations(lm, prompt_of(lm), "France")
    for l in range(lm.n_layers):
        torch.testing.assert_close(acts[l], seen[l])


def test_fast_path_equals_reference_on_a_post_ln_opt():
    # OPT-350m-style blocks normalise after the residual add (do_layer_norm_before=False): the fast
    # path must rebuild the joining rows through that norm (arch.residual_norm), not add to it
    lm = tiny_lm("OPT", do_layer_norm_before=False)
    assert lm.residual_norm(0) is not None
    fast = kn.attribute(lm, prompt_of(lm), "France", steps=8)
    ref = kn.attribute(lm, prompt_of(lm), "France", steps=8, reference=True)
    assert ref.abs().max() > 0 and rel(fast, ref) < 1e-5


@pytest.mark.parametrize("family", ["GPT-2", "Gemma-3", "BERT"])
def test_bfloat16_model_stays_close_to_float32(family):
    # the lower-precision option (meant for CUDA): scores come back as float32 and stay within
    # bf16 rounding of the float32 result, on both paths
    lm = tiny_lm(family)
    exact = kn.attribute(lm, prompt_of(lm), "France", steps=8)
    lm.model.to(torch.bfloat16)
    for plain in (False, True):
        low = kn.attribute(lm, prompt_of(lm), "France", steps=8, reference=plain)
        assert low.dtype == torch.float32
        assert ((low - exact).abs().max() / exact.abs().max()) < 5e-2


@pytest.mark.parametrize("family", ["Gemma-2", "Gemma-3", "Mistral"])
def test_fast_path_equals_reference_when_the_prompt_outgrows_a_sliding_window(family):
    # a sliding-window layer's cache keeps only the window's last tokens and would misplace the answer
    # token (0.44 relative off); the fast path keeps every prompt token in full cache layers and the
    # model applies the window itself
    lm = tiny_lm(family, sliding_window=3)
    for answer in ("France", "France Germany"):
        assert len(targets(lm, prompt_of(lm), answer)[0].ids[0]) > 3
        fast = kn.attribute(lm, prompt_of(lm), answer, steps=8)
        ref = kn.attribute(lm, prompt_of(lm), answer, steps=8, reference=True)
        assert ref.abs().max() > 0 and rel(fast, ref) < 1e-5
        with kn.suppress(lm, [(0, 1), (2, 5)]):
            assert rel(kn.attribute(lm, prompt_of(lm), answer, steps=8),
                       kn.attribute(lm, prompt_of(lm), answer, steps=8, reference=True)) < 1e-5


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "BERT"])
@pytest.mark.parametrize("reference", [False, True])
def test_attribution_emits_no_library_warning(family, reference, recwarn):
    """kn calls the model with the cache keyword the installed transformers expects (no FutureWarning
    about the deprecated `past_key_values`), on both paths."""
    import warnings

    warnings.simplefilter("always")
    lm = tiny_lm(family)
    kn.attribute(lm, prompt_of(lm), "France", steps=2, reference=reference)
    assert not [str(w.message) for w in recwarn if "transformers" in w.filename], [str(w.message) for w in recwarn]


def test_auto_batch_follows_the_prompt_length():
    """Rows per pass shrink with what each row keeps (issue 12, finding 4: a 2,800-token prompt got
    20 rows, the steps floor, for about 10 GB); never fewer than one, never more than the call has."""
    from kn.ig.plan import BUDGET, BYTES_PER_UNIT, auto_batch

    lm = tiny_lm("Gemma-3", hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                 layer_types=["sliding_attention"] * 18)
    whole = [auto_batch(lm, 20, n, n) for n in (10, 700, 2800, 100_000)]
    cached = [auto_batch(lm, 20, 1, n) for n in (10, 700, 2800, 100_000)]
    assert whole == sorted(whole, reverse=True) and cached == sorted(cached, reverse=True)
    assert cached[0] == 20 * 18 and whole[-1] == 1 and cached[2] > whole[2]
    per_row = 18 * BYTES_PER_UNIT * 2800 * (640 + 2048)
    assert whole[2] == max(1, int(BUDGET // per_row))
