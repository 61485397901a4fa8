"""The fast path's clean run: one unmodified pass per answer token, recording what the path reuses."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..hooks import HeadReached, hooked, site_hooks, stop_at_head
from ..models import LM
from ..tokens import Target
from . import kvcache
from .norm import rsqrt


@dataclass
class Clean:
    """acts: site activations [n_layers, width] at the answer-predicting position; rms: layer ->
    clean rsqrt(mean(u^2) + eps) [1] of the post-FFN norm's input there; cached: the path runs the last
    token alone over `cache`, the per-layer (keys, values) of the prompt minus its last token (None
    for a one-token prompt); pos: the answer position in what the path passes run (-1 when cached)."""

    acts: torch.Tensor
    rms: dict
    cached: bool
    cache: list | None
    pos: int


def run_to_head(model, hooks, **inputs) -> None:
    """Run `model(**inputs)` under `hooks`, one of which is a `stop_at_head`."""
    with hooked(hooks):
        try:
            model(**inputs)
        except HeadReached:
            return
    raise RuntimeError("the forward pass ended without reaching the output layer")


def clean_run(lm: LM, t: Target) -> Clean:
    """Run the unmodified model once (to the output layer's input only)."""
    acts: dict[int, torch.Tensor] = {}
    rms: dict[int, torch.Tensor] = {}
    cached = kvcache.usable(lm, t)
    pos = -1 if cached else t.pos

    def read(layer, act):
        acts[layer] = act[0, pos].detach()

    def norm_reader(layer):
        def fn(module, args, output):
            rms[layer] = rsqrt(module, args[0][0, pos]).detach()
        return fn

    hooks = site_hooks(lm, read) + [stop_at_head(lm, pos, {})]
    hooks += [(n, "post", norm_reader(l)) for l in range(lm.n_layers) if (n := lm.post_ffn_norm(l)) is not None]
    stored = None
    with torch.no_grad():
        if cached:  # one pass over the whole prompt; the path reuses its cache minus the last token
            cache = kvcache.empty(lm)
            run_to_head(lm.model, hooks, input_ids=t.ids, use_cache=True, **kvcache.keyword(lm.model, cache))
            if t.ids.shape[1] > 1:
                stored = kvcache.prompt_part(cache)
        else:
            run_to_head(lm.model, hooks, input_ids=t.ids, use_cache=False)
    return Clean(torch.stack([acts[l] for l in range(lm.n_layers)]), rms, cached, stored, pos)
