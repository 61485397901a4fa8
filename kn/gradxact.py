"""Gradient x activation (`kn.GradXAct`; successors.md section 7): s = x * dP(gold)/dx at the clean
site activations x, every layer from one forward and one backward pass per answer token.

It is the first-order estimate of what zeroing a neuron does, and IG with one right-endpoint point
from a zero baseline where no post-FFN norm is frozen (GPT-2, Llama, Qwen...); here every norm runs
as it does (its Jacobian included). One pass instead of IG's layers x steps: a cheap screen.
"""
from __future__ import annotations

import torch

from .hooks import frozen_params, site_hooks, stop_at_head
from .ig.clean import run_to_head
from .ig.head import cotangent
from .models import LM
from .tokens import Target


def grad_x_act_target(lm: LM, t: Target, layers: list[int]) -> torch.Tensor:
    """x * dP(gold)/dx [n_layers, width] (float32, CPU) of one answer token, zero outside `layers`."""
    # a zero probe added at each site: dP/d(probe) is dP/dx with every layer above still reading x
    # (a site replaced by a leaf of its own would cut the higher layers off from the lower ones)
    probes: dict[int, torch.Tensor] = {}
    x: dict[int, torch.Tensor] = {}

    def splice(layer: int, act: torch.Tensor) -> torch.Tensor:
        x[layer] = act[0, t.pos].detach()
        probes[layer] = torch.zeros_like(x[layer], requires_grad=True)
        out = act.clone()
        out[0, t.pos] = act[0, t.pos] + probes[layer]
        return out

    store: dict = {}
    hooks = site_hooks(lm, splice, layers) + [stop_at_head(lm, t.pos, store)]
    with frozen_params(lm.model), torch.enable_grad():
        run_to_head(lm.model, hooks, input_ids=t.ids, use_cache=False)
        h = store["h"]
        grads = torch.autograd.grad(h, [probes[l] for l in layers], grad_outputs=cotangent(lm, h, t.gold))
    out = torch.zeros(lm.n_layers, lm.width)
    for l, g in zip(layers, grads):
        out[l] = (x[l].float() * g.float()).cpu()
    return out
