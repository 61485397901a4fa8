"""Integrated-gradients attribution of a fact to FFN neurons (Dai et al. 2022, eq. 3-4).

For layer l, neuron site activation x (at the answer-predicting position) and baseline b (zero by
default):  score_l = (x - b) / m * sum_k dP(gold | b + a_k (x - b)) / d(site),  a_k = k / m, k = 0..m-1
("riemann_left", the paper's), or a_k = linspace(0, 1, m) ("linspace", the EleutherAI package's).
P is the softmax probability of the gold token. Only the attributed layer's site is scaled; every
other layer and position runs normally. A multi-token answer is teacher-forced: each answer token is
attributed at the position that predicts it, and the per-token score matrices are summed.

Fast path (default): one clean run per answer token; a path batch enters the model as the clean row
alone, and the rows of layer l join it right after block l, their block output rebuilt from the
path point through the FFN's tail (so a row runs only the blocks above its own layer); rows of several
layers share a batch; only the answer position reaches the output layer, which the fast path
computes itself in vocabulary chunks (online softmax: the [rows, vocab] logits are never stored).
For causal LMs the clean run's key/value cache is reused, so only the answer-predicting token runs.
`reference=True` is the plain definition (full recomputation, one layer at a time, the site replaced
inside the block), kept as the oracle of the tests.

Post-FFN norms (Gemma-2/3): an RMSNorm on the FFN output cancels the path's scaling and makes the
gradient near a = 0 explode. With `freeze_norm=True` (default) the attributed layer's norm scale is
held at its clean value along the path, so the norm becomes a fixed linear map.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from . import arch
from .hooks import HeadReached, frozen_params, head_at, hooked, site_hooks, stop_at_head
from .models import LM
from .tokens import Target, targets

METHODS = ("riemann_left", "linspace")


def alphas(steps: int, method: str = "riemann_left") -> torch.Tensor:
    """Path points [steps] of a quadrature rule."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if method == "riemann_left":
        return torch.arange(steps, dtype=torch.float32) / steps
    if method == "linspace":
        return torch.linspace(0, 1, steps)
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def check_layers(lm: LM, layers) -> list[int]:
    n = lm.n_layers
    if layers is None:
        return list(range(n))
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for l in layers:
        if not isinstance(l, int) or not -n <= l < n:
            raise ValueError(f"layer {l!r} is out of range: {lm.name} has {n} layers (0..{n - 1})")
        out.append(l % n)
    return sorted(set(out))


@dataclass
class Clean:
    """The clean run of one answer token: site activations [L, W] and what the path reuses."""

    acts: torch.Tensor
    rms: dict  # layer -> clean rsqrt(mean(x^2) + eps) of the post-FFN norm input at the position, [1]
    cache: list | None  # per-layer (keys, values) of the prompt minus its last token (causal LMs)


def _rsqrt(norm, x: torch.Tensor) -> torch.Tensor:
    return torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + norm.eps)


def _frozen(norm, x: torch.Tensor, out: torch.Tensor, clean_rms: torch.Tensor) -> torch.Tensor:
    """norm's output `out` for input x, rescaled as if x had the clean input's RMS (the freeze)."""
    return (out.float() * (clean_rms / _rsqrt(norm, x))).to(out.dtype)


def _fresh_cache(lm: LM, stored, sizes: list[int]):
    """A new cache holding the stored prompt keys/values, expanded to batch sizes[i] at layer i."""
    if stored is None:
        return None
    cache = DynamicCache(config=lm.model.config)
    for i, (k, v) in enumerate(stored):
        cache.update(k.expand(sizes[i], *k.shape[1:]), v.expand(sizes[i], *v.shape[1:]), i)
    return cache


def _with_cache(model, cache) -> dict:
    """The key/value-cache keyword of `model.forward`: `cache` in newer transformers 5.x, where
    `past_key_values` is deprecated (a FutureWarning per call), `past_key_values` before."""
    if cache is None:
        return {}
    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def _uses_cache(lm: LM, t: Target, reference: bool) -> bool:
    """The fast path of a causal LM runs the answer-predicting token over the prompt's key/value cache,
    unless a sliding window is shorter than the prompt: its cache would hold only the window's last
    tokens and the model would place the new token by the cache's length. Then the whole prompt runs."""
    if lm.masked or reference:
        return False
    cfg = lm.model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    window = getattr(cfg, "sliding_window", None)
    return window is None or t.ids.shape[1] <= window


def _softmax_gold(logits: torch.Tensor, gold: int) -> torch.Tensor:
    return torch.softmax(logits[:, -1].float(), dim=-1)[:, gold]


def _run_to_head(model, hooks, **inputs) -> None:
    """Run `model(**inputs)` under `hooks`, one of which is a `stop_at_head`."""
    with hooked(hooks):
        try:
            model(**inputs)
        except HeadReached:
            return
    raise RuntimeError("the forward pass ended without reaching the output layer")


def _head_cotangent(lm: LM, h: torch.Tensor, gold: int, skip: int) -> torch.Tensor:
    """d P(gold) / d h [B, d] of each row of h [B, d] (the output layer's input), zero on rows < skip.

    P = softmax(z), z = cap * tanh(u / cap) (cap: the config's final logit softcap, if any),
    u = h W^T + b. Then dP_g/dh = P_g (z'_g W_g - sum_v p_v z'_v W_v): the vocabulary is walked in
    chunks with a running max (online softmax), so the [B, vocab] logits are never stored.
    """
    head = lm.model.get_output_embeddings()
    cfg = lm.model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    cap = getattr(cfg, "final_logit_softcapping", None)
    W, bias = head.weight, head.bias
    out = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
    h = h[skip:].detach().float()
    B, V = h.shape[0], W.shape[0]

    # logits are computed transposed, [chunk, B] = W_chunk h^T: faster than h W_chunk^T on CPU BLAS
    chunk = 2048
    hT = h.T.contiguous()
    buf = torch.empty(min(chunk, V) * B, device=h.device)  # reused: fresh large tensors cost page faults
    m = torch.full((B,), float("-inf"), device=h.device)
    total = torch.zeros(B, device=h.device)
    accT = torch.zeros(h.shape[1], B, device=h.device)
    with torch.no_grad():
        for c in range(0, V, chunk):
            w = W[c:c + chunk].float()
            z = torch.mm(w, hT, out=buf[:w.shape[0] * B].view(w.shape[0], B))
            if bias is not None:
                z += bias[c:c + chunk, None].float()
            if cap is not None:  # z <- cap * tanh(u / cap); dz/du = 1 - tanh^2 comes back from z below
                z.div_(cap).tanh_().mul_(cap)
            m_new = torch.maximum(m, z.amax(0))
            rescale = torch.exp(m - m_new)
            dz = None if cap is None else 1 - (z / cap).pow_(2)
            e = z.sub_(m_new).exp_()
            total = total * rescale + e.sum(0)
            if dz is not None:
                e = e.mul_(dz)
            accT.mul_(rescale).addmm_(w.T, e)
            m = m_new
        acc = accT.T
        ug = h @ W[gold].float()
        if bias is not None:
            ug = ug + bias[gold].float()
        if cap is None:
            zg, dzg = ug, 1.0
        else:
            t = torch.tanh(ug / cap)
            zg, dzg = cap * t, (1 - t * t)[:, None]
        pg = torch.exp(zg - m) / total
        out[skip:] = pg[:, None] * (W[gold].float() * dzg - acc / total[:, None])
    return out


def clean_run(lm: LM, t: Target, *, reference: bool = False) -> Clean:
    """Run the unmodified model once, recording what the path needs."""
    model, fam = lm.model, lm.family
    acts: dict[int, torch.Tensor] = {}
    rms: dict[int, torch.Tensor] = {}
    use_cache = _uses_cache(lm, t, reference)
    pos = -1 if use_cache else t.pos

    def read(layer, act):
        acts[layer] = act[0, pos].detach()

    def norm_reader(layer):
        def fn(module, args, output):
            rms[layer] = _rsqrt(module, args[0][0, pos]).detach()
        return fn

    hooks = site_hooks(lm, read) + [stop_at_head(lm, pos, {})]
    if fam.post_ffn_norm:
        hooks += [(arch.post_ffn_norm(model, fam, l), "post", norm_reader(l)) for l in range(lm.n_layers)]
    stored = None
    with torch.no_grad():
        if use_cache:  # one pass over the whole prompt; the path reuses its cache minus the last token
            cache = DynamicCache(config=model.config)
            _run_to_head(model, hooks, input_ids=t.ids, use_cache=True, **_with_cache(model, cache))
            if t.ids.shape[1] > 1:
                stored = [(layer.keys[:, :, :-1], layer.values[:, :, :-1]) for layer in cache.layers]
        else:
            _run_to_head(model, hooks, input_ids=t.ids, use_cache=False)
    return Clean(torch.stack([acts[l] for l in range(lm.n_layers)]), rms, stored)


def _ffn_tail(lm: LM, layer: int, clean: Clean, freeze: bool):
    """T: site values [n, W] -> what the FFN adds to the residual stream [n, d] (output projection,
    then the post-FFN norm if any, its scale held at the clean value when `freeze`)."""
    down = arch.down_proj(lm.model, lm.family, layer)
    norm = arch.post_ffn_norm(lm.model, lm.family, layer)

    def tail(v: torch.Tensor) -> torch.Tensor:
        u = down(v.to(down.weight.dtype))
        if norm is None:
            return u
        out = norm(u)
        return _frozen(norm, u, out, clean.rms[layer]) if freeze else out
    return tail


def _path_grads(lm: LM, t: Target, clean: Clean, base: torch.Tensor, row_layer: list[int],
                row_alpha: torch.Tensor, *, freeze: bool, reference: bool) -> dict[int, torch.Tensor]:
    """Sum over the rows of each layer of dP(gold)/d(site) at the path points: {layer: [W]}.

    Rows are sorted by layer. Fast path: the batch starts as one clean row; after the block of each
    attributed layer it grows by that layer's rows, whose block output is the clean row's with the
    answer position rebuilt from the path point, N(r + T(site)) (see `arch.residual_norm`), so a row
    runs only the layers above its own. Reference path (and families without `fanout`): all rows
    from the input, the site replaced inside the block.
    """
    model, fam = lm.model, lm.family
    layers = sorted(set(row_layer))
    counts = {l: row_layer.count(l) for l in layers}
    grow = fam.fanout and not reference
    use_cache = _uses_cache(lm, t, reference)
    pos = -1 if use_cache else t.pos

    rows, size = {}, int(grow)  # row 0 is the clean row when growing
    for l in layers:
        rows[l] = torch.arange(size, size + counts[l], device=clean.acts.device)
        size += counts[l]
    # batch size present at each block: the rows of the layers below it
    sizes = [size] * lm.n_layers if not grow else \
        [1 + sum(c for l, c in counts.items() if l < i) for i in range(lm.n_layers)]

    x, b = clean.acts, base
    a = row_alpha.to(x)
    leaves, k = {}, 0
    for l in layers:
        leaves[l] = (b[l] + a[k:k + counts[l], None] * (x[l] - b[l])).requires_grad_(True)
        k += counts[l]

    def replace(layer, act):
        act = act.clone()
        act[rows[layer], pos] = leaves[layer].to(act.dtype)
        return act

    norm_in: dict[int, torch.Tensor] = {}  # the clean row's residual-norm input at the position, [1, d]

    def norm_reader(layer):
        def fn(module, args, kwargs):
            norm_in[layer] = (args[0] if args else kwargs["input"])[:1, pos].detach()
        return fn

    def joiner(layer):
        tail, norm = _ffn_tail(lm, layer, clean, freeze), arch.residual_norm(model, fam, layer)

        def fn(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            y = norm_in[layer] if norm is not None else h[:1, pos].detach()  # = r + T(x), clean row
            tx = tail(torch.cat([x[layer][None].to(leaves[layer].dtype), leaves[layer]])).float()  # one matmul
            new_pos = (y.float() - tx[:1]) + tx[1:]
            if norm is not None:
                new_pos = norm(new_pos.to(h.dtype))
            new = h[:1].detach().expand(counts[layer], *h.shape[1:]).clone()
            new[:, pos] = new_pos.to(h.dtype)
            h = torch.cat([h, new])
            return (h, *output[1:]) if isinstance(output, tuple) else h
        return fn

    def freezer(layer):
        def fn(module, args, output):
            r = rows[layer]
            out = output.clone()
            out[r, pos] = _frozen(module, args[0][r, pos], output[r, pos], clean.rms[layer])
            return out
        return fn

    def to_answer(module, args, kwargs):  # the last block's FFN: only the answer position matters
        a = args[0] if args else kwargs["hidden_states"]
        a = a[:, pos:pos + 1]
        return ((a, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": a})

    def keep_answer(module, args, output):  # the last block's output: the answer position only
        h = output[0] if isinstance(output, tuple) else output
        h = h[:, pos:pos + 1]
        return (h, *output[1:]) if isinstance(output, tuple) else h

    blocks = arch.blocks(model, fam)
    head: dict = {}
    head_pos = pos
    if grow:
        hooks = [(blocks[l], "post", joiner(l)) for l in layers]
        hooks += [(n, "pre", norm_reader(l)) for l in layers
                  if (n := arch.residual_norm(model, fam, l)) is not None]
        last = lm.n_layers - 1
        if not use_cache and (ffn := arch.ffn_in(model, fam, last)) is not None:
            hooks += [(ffn, "pre", to_answer), (blocks[last], "post", keep_answer)]
            head_pos = 0  # what reaches the output layer is that position alone
    else:
        hooks = site_hooks(lm, replace, layers)
        if freeze and fam.post_ffn_norm:
            hooks += [(arch.post_ffn_norm(model, fam, l), "post", freezer(l)) for l in layers]
    hooks.append(head_at(lm, pos) if reference else stop_at_head(lm, head_pos, head))

    ids = t.ids[:, -1:] if use_cache else t.ids
    ids = ids.expand(1 if grow else size, -1)
    cache = _fresh_cache(lm, clean.cache, sizes) if use_cache else None
    inputs = [leaves[l] for l in layers]
    with torch.enable_grad():
        if reference:  # the plain definition: the model's logits, softmax, autograd
            with hooked(hooks):
                logits = model(input_ids=ids, use_cache=use_cache, **_with_cache(model, cache)).logits
            grads = torch.autograd.grad(_softmax_gold(logits, t.gold).sum(), inputs)
        else:
            _run_to_head(model, hooks, input_ids=ids, use_cache=use_cache, **_with_cache(model, cache))
            h = head["h"]
            grads = torch.autograd.grad(h, inputs, grad_outputs=_head_cotangent(lm, h, t.gold, int(grow)).to(h.dtype))
    return {l: g.float().sum(0) for l, g in zip(layers, grads)}


def auto_batch(lm: LM, steps: int, seq: int, reference: bool = False) -> int:
    """Path rows per forward pass so that one pass stays near 1 GB (the reference path also holds
    each row's full-vocabulary logits and softmax; the fast path walks the vocabulary in chunks)."""
    cfg = lm.model.config
    vocab = lm.model.get_output_embeddings().weight.shape[0] if reference else 0
    hidden = getattr(cfg, "hidden_size", None) or lm.model.get_input_embeddings().weight.shape[1]
    per_row = 12 * vocab + 64 * seq * (hidden + lm.width)
    return max(steps, min(steps * lm.n_layers, int(1e9 // per_row)))


def _attribute_target(lm: LM, t: Target, *, steps, layers, method, baseline, freeze_norm, batch_size,
                      reference) -> torch.Tensor:
    clean = clean_run(lm, t, reference=reference)
    x = clean.acts
    base = torch.zeros_like(x) if baseline is None else baseline.to(x)
    a = alphas(steps, method)
    gsum = torch.zeros(lm.n_layers, lm.width, dtype=torch.float32, device=x.device)
    bs = batch_size or auto_batch(lm, steps, t.ids.shape[1], reference)
    if reference:
        bs = min(bs, steps)
    row_layer = [l for l in layers for _ in range(steps)]
    row_alpha = a.repeat(len(layers))
    chunks = []
    if reference:  # one layer at a time
        for i, l in enumerate(layers):
            for s in range(0, steps, bs):
                chunks.append(slice(i * steps + s, i * steps + min(s + bs, steps)))
    else:
        chunks = [slice(s, min(s + bs, len(row_layer))) for s in range(0, len(row_layer), bs)]
    with frozen_params(lm.model):
        for c in chunks:
            for l, g in _path_grads(lm, t, clean, base, row_layer[c], row_alpha[c],
                                    freeze=freeze_norm, reference=reference).items():
                gsum[l] += g
    scores = (x.float() - base.float()) * gsum / steps
    mask = torch.zeros(lm.n_layers, 1, dtype=torch.bool, device=x.device)
    mask[layers] = True
    return torch.where(mask, scores, torch.zeros_like(scores)).cpu()


def attribute(lm: LM, prompt: str, answer: str, *, steps: int = 20, layers=None,
              method: str = "riemann_left", baseline: torch.Tensor | None = None,
              freeze_norm: bool = True, batch_size: int | None = None,
              reference: bool = False) -> torch.Tensor:
    """IG attribution scores [n_layers, width] of `answer` after / in `prompt`.

    steps: m path points; layers: layers to attribute (others are zero rows); method: "riemann_left"
    (Dai et al.) or "linspace" (EleutherAI); baseline: [n_layers, width] (None = zero; AMIG passes
    its own); freeze_norm: hold post-FFN norm scales at their clean values (families with such a
    norm); batch_size: path rows per forward pass (None = sized to memory); reference: run the plain
    definition instead of the fast path.
    """
    alphas(steps, method)  # validate before any model work
    layers = check_layers(lm, layers)
    if baseline is not None and tuple(baseline.shape) != (lm.n_layers, lm.width):
        raise ValueError(f"baseline must have shape [{lm.n_layers}, {lm.width}], got {list(baseline.shape)}")
    total = torch.zeros(lm.n_layers, lm.width)
    for t in targets(lm, prompt, answer):
        total += _attribute_target(lm, t, steps=steps, layers=layers, method=method, baseline=baseline,
                                   freeze_norm=freeze_norm, batch_size=batch_size, reference=reference)
    return total


def activations(lm: LM, prompt: str, answer: str) -> torch.Tensor:
    """Neuron-site activations [n_layers, width] at the answer-predicting position(s), summed over answer tokens."""
    return sum(clean_run(lm, t).acts.float().cpu() for t in targets(lm, prompt, answer))
