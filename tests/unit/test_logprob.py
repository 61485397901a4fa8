"""Log-probability increase (kn.LogProbIncrease; Yu & Ananiadou 2024) against a brute-force loop written here
from the definition, one neuron at a time, in every tiny causal family; against autograd for small writes;
the batched kernel against itself one row and one chunk at a time; and as a first-class attribution setting
(scores, locate, run, the CLI)."""
import copy

import pytest
import torch
from torch import nn

import kn
from kn.hooks import hooked
from kn.testing import MASKED, TINY, tiny_lm
from kn.tokens import targets

PROMPT, ANSWER = "Paris is the capital of", "France"
CAUSAL = [f for f in TINY if f not in MASKED]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def lm_of(family: str, **overrides):
    """A tiny model whose every norm (GPT-2's ln_f and ln_1 too, biases included) does something."""
    lm = tiny_lm(family, **overrides)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in lm.model.named_parameters():
            if p.dim() == 1 and ("ln" in name or "norm" in name):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return lm


def _rsqrt(norm, x):
    """1 / the norm's scale for input x: a LayerNorm centres, an RMSNorm does not."""
    eps = norm.eps if hasattr(norm, "eps") else norm.variance_epsilon
    c = x - x.mean(-1, keepdim=True) if isinstance(norm, nn.LayerNorm) else x
    return torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + eps)


def frozen(norm, clean):
    """The norm as the model runs it, its output rescaled to the clean input's scale, its bias dropped."""
    s = _rsqrt(norm, clean)

    def f(x):
        bias = getattr(norm, "bias", None)
        out = norm(x) - (0 if bias is None else bias)
        return out * s / _rsqrt(norm, x)
    return f


def clean_parts(lm, t, prompt=PROMPT, answer=ANSWER):
    """Per layer the stream after the block (the next block's or the final norm's input), the site
    activations, and the final norm's input; all at the answer position."""
    after, final = {}, {}

    def reader(layer):
        def fn(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            (after.__setitem__(layer, x[0, t.pos]) if layer is not None else final.__setitem__("x", x[0, t.pos]))
        return fn

    hooks = [(lm.blocks[l + 1], "pre", reader(l)) for l in range(lm.n_layers - 1)]
    hooks += [(lm.final_norm, "pre", reader(lm.n_layers - 1)), (lm.final_norm, "pre", reader(None))]
    with torch.no_grad(), hooked(hooks):
        lm.model(input_ids=t.ids)
    return after, kn.activations(lm, prompt, answer).to(lm.head.weight.dtype), final["x"]


def log_p(lm, norm, gold):
    cap = getattr(lm.text_config, "final_logit_softcapping", None)

    def f(x):
        z = lm.head(norm(x))
        z = z if cap is None else cap * torch.tanh(z / cap)
        return torch.log_softmax(z, -1)[..., gold]
    return f


def brute_force(lm, prompt=PROMPT, answer=ANSWER):
    """Imp [n_layers, width], neuron by neuron: h = the stream after the block minus the FFN output (recomputed
    from the site activations), the neuron's write m_i W_out[:, i] (through the post-FFN norm frozen at the
    FFN output), then log p(gold | h + write) - log p(gold | h) through the frozen final norm."""
    t = targets(lm, prompt, answer)[0]
    after, acts, final_in = clean_parts(lm, t, prompt, answer)
    lp = log_p(lm, frozen(lm.final_norm, final_in), t.gold)
    out = torch.zeros(lm.n_layers, lm.width)
    with torch.no_grad():
        for l in range(lm.n_layers):
            down, post = lm.down_proj(l), lm.post_ffn_norm(l)
            u = down(acts[l][None])[0]
            ffn = u if post is None else post(u[None])[0]
            h = after[l] - ffn
            slots = lm.value_slots(l)
            base = lp(h)
            for i in range(lm.width):
                write = acts[l, i] * slots[i]
                if post is not None:
                    write = frozen(post, u)(write)
                out[l, i] = lp(h + write) - base
    return out


@pytest.mark.parametrize("family", CAUSAL)
def test_agrees_with_a_brute_force_loop(family):
    lm = lm_of(family)
    ours = kn.log_prob_increase(lm, PROMPT, ANSWER)  # float32
    # the loop in float64, so that its differences of two log-probabilities lose no digits (the RMSNorms of
    # Llama and Gemma still compute in float32 inside: ~4e-8 from the exact values there)
    theirs = brute_force(kn.wrap(copy.deepcopy(lm.model).double(), lm.tokenizer))
    assert theirs.abs().max() > 5e-4
    assert rel(ours, theirs) < 1e-4, family
    assert torch.equal(kn.scores(lm, PROMPT, ANSWER, kn.LogProbIncrease()), ours)


def test_the_writes_and_norms_matter():
    """The oracle can tell: without the post-FFN norm (Gemma-3) or the final norm's gain the scores differ."""
    lm = lm_of("Gemma-3")
    ours = kn.log_prob_increase(lm, PROMPT, ANSWER)
    with torch.no_grad():
        for l in range(lm.n_layers):
            lm.post_ffn_norm(l).weight.add_(0.5)
    assert rel(kn.log_prob_increase(lm, PROMPT, ANSWER), ours) > 0.05


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3"])
def test_small_writes_are_first_order(family):
    """For small writes Imp_i = write_i . d log p(gold | h) / dh (autograd through the frozen final norm), in
    float64; writes made small by shrinking the value slots (Gemma-3: the post-FFN norm's gain 1 + w)."""
    lm = lm_of(family)
    lm.model.double()
    eps = 1e-6
    with torch.no_grad():
        for l in range(lm.n_layers):
            post = lm.post_ffn_norm(l)
            if post is None:
                lm.down_proj(l).weight.mul_(eps)
            else:
                post.weight.copy_(eps * (1 + post.weight) - 1)
    ours = kn.log_prob_increase(lm, PROMPT, ANSWER).double()
    t = targets(lm, PROMPT, ANSWER)[0]
    after, acts, final_in = clean_parts(lm, t)
    lp = log_p(lm, frozen(lm.final_norm, final_in), t.gold)
    for l in range(lm.n_layers):
        down, post = lm.down_proj(l), lm.post_ffn_norm(l)
        with torch.no_grad():
            u = down(acts[l][None].double())[0]
            h = after[l] - (u if post is None else post(u[None])[0])
            writes = acts[l].double()[:, None] * lm.value_slots(l)
            if post is not None:
                writes = frozen(post, u)(writes)
        x = h.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(lp(x), x)
        first = writes @ grad
        assert first.abs().max() > 0
        assert rel(ours[l], first) < 1e-4, (family, l)


def test_batched_equals_one_neuron_and_one_chunk_at_a_time():
    from kn.ig.head import params
    from kn.logprob import increases

    lm = lm_of("Gemma-2")  # a final logit softcap
    assert params(lm)[2] is not None
    g = torch.Generator().manual_seed(0)
    y0, dy = torch.randn(lm.model.config.hidden_size, generator=g), 0.3 * torch.randn(7, 32, generator=g)
    batched = increases(params(lm), y0, dy, 9)
    loop = torch.cat([increases(params(lm), y0, dy[i:i + 1], 9, chunk=5) for i in range(len(dy))])
    assert torch.allclose(batched, loop, atol=1e-6)
    # W_U = I, no bias, no cap: log_softmax by hand; small writes (the expm1 path), large ones and one logit
    # change past EXPM1_MAX (the logsumexp pass), in one batch
    V = 32
    dy = torch.cat([dy, 3 * torch.randn(3, V, generator=g), 100 * torch.eye(V)[[4]]])
    direct = torch.log_softmax(y0 + dy, -1)[:, 9] - torch.log_softmax(y0, -1)[9]
    assert torch.allclose(increases((torch.eye(V), None, None), y0, dy, 9, chunk=3), direct, atol=1e-5)
    s_minus_1 = (torch.softmax(y0, -1) * torch.expm1(dy)).sum(-1)  # what sends a row to the second pass
    assert direct[-1] < -80 and (s_minus_1[-4:-1].abs() >= 0.5).all() and (s_minus_1[:7].abs() < 0.5).all()
    # and with a bias and a cap
    b = torch.randn(V, generator=g)

    def by_hand(y):
        return torch.log_softmax(5 * torch.tanh((y + b) / 5), -1)[..., 9]
    assert torch.allclose(increases((torch.eye(V), b, 5.0), y0, dy, 9, chunk=4), by_hand(y0 + dy) - by_hand(y0),
                          atol=1e-6)


def test_multi_token_answers_sum_their_tokens_and_layers_mask():
    from kn.logprob import log_prob_increase_target

    lm = lm_of("Llama")
    p = "Paris is located"
    both = kn.log_prob_increase(lm, p, "in France")
    parts = targets(lm, p, "in France")
    assert len(parts) == 2
    layers = list(range(lm.n_layers))
    assert torch.allclose(both, sum(log_prob_increase_target(lm, t, layers) for t in parts))
    only = kn.log_prob_increase(lm, p, "in France", layers=[1])
    assert torch.equal(only[1], both[1]) and not only[0].any() and not only[2].any()
    assert torch.equal(kn.scores(lm, p, "in France", kn.LogProbIncrease(), layers=[1]), only)


@pytest.mark.parametrize("family", ["BERT", "DistilBERT"])
def test_masked_and_post_ln_models_are_refused(family):
    with pytest.raises(kn.UnsupportedModelError, match="LogProbIncrease.*masked"):
        kn.scores(tiny_lm(family), "Paris is the capital of [MASK].", "France", kn.LogProbIncrease())
    post_ln = tiny_lm("OPT", do_layer_norm_before=False)  # OPT-350m's blocks
    with pytest.raises(kn.UnsupportedModelError, match="post-LN"):
        kn.scores(post_ln, PROMPT, ANSWER, kn.LogProbIncrease())


def test_a_first_class_setting(tmp_path, monkeypatch):
    """LogProbIncrease goes wherever IG does: settings from and to dicts, kn.locate, kn.run, `kn run --method`
    and `kn locate --method`."""
    from kn import cli
    from kn.settings import KINDS, from_dict, resolve

    assert KINDS["logprob"] is kn.LogProbIncrease
    assert from_dict(kn.LogProbIncrease().to_dict()) == kn.LogProbIncrease()
    assert resolve(method="logprob") == kn.LogProbIncrease()
    with pytest.raises(TypeError, match="integrated gradients"):
        resolve(kn.LogProbIncrease(), steps=4)
    lm = tiny_lm("GPT-2", initializer_range=0.2)
    prompts = ["Paris is the capital of", "the capital city of Paris is in", "Paris lies in the country of"]
    located = kn.locate(lm, prompts, "France", kn.LogProbIncrease(), threshold=0.2, share=0.5, min_prompts=2)
    assert located and all(0 <= l < lm.n_layers for l, _ in located)
    from test_run import tiny_facts

    res = kn.run(lm, tiny_facts(), tmp_path / "r", attribution=kn.LogProbIncrease(), progress=False)
    assert res.settings.attribution == kn.LogProbIncrease() and res.facts.n_neurons.notna().any()
    assert kn.load_run(tmp_path / "r").settings.attribution == kn.LogProbIncrease()

    seen = []
    monkeypatch.setattr(cli, "cmd_run", lambda args: seen.append(cli.run_settings(args)))
    assert cli.main(["run", "--method", "logprob", "--out", str(tmp_path / "cli")]) == 0
    assert seen[-1].attribution == kn.LogProbIncrease() and seen[-1].attribution.coarse_threshold == 0.2
    assert cli.main(["run", "--method", "logprob", "--steps", "4", "--out", str(tmp_path / "cli")]) == 2
    monkeypatch.setattr(cli, "cmd_locate", lambda args: seen.append(cli.attribution(args)))
    assert cli.main(["locate", "a", "b", "c", "-a", "x", "--method", "logprob"]) == 0
    assert seen[-1] == kn.LogProbIncrease()
    assert cli.main(["locate", "a", "b", "c", "-a", "x"]) == 0 and seen[-1] == kn.IG()
    assert cli.main(["locate", "a", "b", "c", "-a", "x", "--steps", "7"]) == 0 and seen[-1] == kn.IG(steps=7)


@pytest.mark.parametrize("family", ["GPT-2", "Gemma-3"])
def test_bfloat16_weights_score_in_float32(family):
    """bf16 models (kn run --dtype bfloat16): the scores come out float32 and near the float32 model's."""
    lm = lm_of(family)
    want = kn.log_prob_increase(lm, PROMPT, ANSWER)
    half = kn.wrap(copy.deepcopy(lm.model).to(torch.bfloat16), lm.tokenizer)
    got = kn.log_prob_increase(half, PROMPT, ANSWER)
    assert got.dtype == torch.float32 and rel(got, want) < 0.1
