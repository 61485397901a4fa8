"""IG attribution written from its definition: the oracle the fast path is tested against.

For each attributed layer l and path point a_k: run the model on the whole prompt, batch of points,
with the answer position of layer l's site replaced by b + a_k (x - b) inside the block, take the
model's own logits and softmax P(gold), and let autograd give dP/d(site). Score:
(x - b) * sum_k w_k dP/d(site)_k (Dai et al. 2022, eq. 3-4). With `freeze_norm`, the post-FFN norm of
layer l (Gemma-2/3) keeps its clean scale rsqrt(mean(u^2) + eps) at that position.

It shares with the fast path only the hook primitive (`kn.hooks`) and the family table (`kn.arch`,
through `LM`), besides the inputs' own definitions (tokens, quadrature rule, baseline). It is slow.
"""
from __future__ import annotations

import torch

from .. import baselines
from ..hooks import frozen_params, head_at, hooked, site_hooks
from ..models import LM
from ..settings import IG
from ..tokens import Target


def _norm_scale(norm, u: torch.Tensor) -> torch.Tensor:
    """An RMSNorm's scale rsqrt(mean(u^2) + eps) [..., 1] for its input u [..., d]."""
    return torch.rsqrt(u.float().pow(2).mean(-1, keepdim=True) + norm.eps)


def clean_site(lm: LM, t: Target) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """A plain forward pass: site activations [n_layers, width] at t.pos, and each post-FFN norm's
    scale [1] there {layer: scale}."""
    acts, scale = {}, {}

    def read_norm(layer):
        def fn(module, args, output):
            scale[layer] = _norm_scale(module, args[0][0, t.pos]).detach()
        return fn

    hooks = site_hooks(lm, lambda l, act: acts.__setitem__(l, act[0, t.pos].detach()))
    hooks += [(n, "post", read_norm(l)) for l in range(lm.n_layers) if (n := lm.post_ffn_norm(l)) is not None]
    with torch.no_grad(), hooked(hooks + [head_at(lm, t.pos)]):
        lm.model(input_ids=t.ids, use_cache=False)
    return torch.stack([acts[l] for l in range(lm.n_layers)]), scale


def gold_prob(lm: LM, t: Target, layer: int, v: torch.Tensor, clean_scale: torch.Tensor | None) -> torch.Tensor:
    """P(gold) [n] with layer's site at t.pos set to v [n, width] (and, given clean_scale, its post-FFN
    norm's scale held there)."""
    def put(l, act):
        act = act.clone()  # [n, seq, width]
        act[:, t.pos] = v.to(act.dtype)
        return act

    def hold(module, args, out):
        ratio = clean_scale / _norm_scale(module, args[0][:, t.pos])
        held = out.clone()
        held[:, t.pos] = (out[:, t.pos].float() * ratio).to(out.dtype)
        return held

    hooks = site_hooks(lm, put, [layer]) + [head_at(lm, t.pos)]
    if clean_scale is not None:
        hooks.append((lm.post_ffn_norm(layer), "post", hold))
    with hooked(hooks):
        logits = lm.model(input_ids=t.ids.expand(len(v), -1), use_cache=False).logits
    return torch.softmax(logits[:, -1].float(), dim=-1)[:, t.gold]


def attribute_target(lm: LM, t: Target, ig: IG, layers: list[int]) -> torch.Tensor:
    """IG scores [n_layers, width] (float32, CPU) of one answer token, one layer at a time, zero rows
    outside `layers`; at most ig.batch_size path points per pass (default all of them)."""
    x, scale = clean_site(lm, t)
    base = baselines.resolve(lm, t, ig.baseline).to(x)
    q = ig.quadrature()
    a, w = q.points.float().to(x), q.weights.float().to(x.device)
    batch = min(ig.batch_size or ig.steps, ig.steps)
    out = torch.zeros(lm.n_layers, lm.width, dtype=torch.float32, device=x.device)
    held = scale if ig.freeze_norm else {}
    with frozen_params(lm.model), torch.enable_grad():
        for l in layers:
            total = torch.zeros(lm.width, dtype=torch.float32, device=x.device)
            for k in range(0, ig.steps, batch):
                v = (base[l] + a[k:k + batch, None] * (x[l] - base[l])).requires_grad_(True)
                (g,) = torch.autograd.grad(gold_prob(lm, t, l, v, held.get(l)).sum(), v)
                total += (g.float() * w[k:k + batch, None]).sum(0)
            out[l] = ig.factor(x[l], base[l]) * total
    return out.cpu()
