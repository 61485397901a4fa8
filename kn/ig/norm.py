"""The post-FFN norm freeze (Gemma-2/3) and the FFN tail the fast path rebuilds rows through.

An RMSNorm on the FFN output cancels the path's scaling and makes the gradient near a = 0 explode.
Frozen, its scale rsqrt(mean(u^2) + eps) is held at the clean run's value, so it is a fixed linear map.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..models import LM


def rsqrt(norm, u: torch.Tensor) -> torch.Tensor:
    """rsqrt(mean(u^2) + eps) of the norm's input u [..., d] -> [..., 1] (float32)."""
    return torch.rsqrt(u.float().pow(2).mean(-1, keepdim=True) + norm.eps)


def frozen(norm, u: torch.Tensor, out: torch.Tensor, clean_rms: torch.Tensor) -> torch.Tensor:
    """The norm's output `out` for input u, rescaled as if u had the clean input's RMS."""
    return (out.float() * (clean_rms / rsqrt(norm, u))).to(out.dtype)


def ffn_tail(lm: LM, layer: int, clean_rms: dict, freeze: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """T: site values [n, W] -> what the FFN adds to the residual stream [n, d] (output projection,
    then the post-FFN norm if any, its scale held at clean_rms[layer] when `freeze`)."""
    down, norm = lm.down_proj(layer), lm.post_ffn_norm(layer)

    def tail(v: torch.Tensor) -> torch.Tensor:
        # forward, not __call__: v is the site value as attributed; a site hook (an active kn.scaled)
        # has acted on the clean run already, and the reference path does not re-apply it either
        u = down.forward(v.to(down.weight.dtype))
        if norm is None:
            return u
        out = norm(u)
        return frozen(norm, u, out, clean_rms[layer]) if freeze else out
    return tail
