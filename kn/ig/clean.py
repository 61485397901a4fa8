"""The fast path's clean run: one unmodified pass per answer token, recording what the path reuses.

`Recording` holds the hooks and inputs that record a `Clean` from a pass over an answer token's
prompt: `clean_run`'s own, or a screen's forward (`kn.gradxact`, zero probes: every value clean)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..hooks import HeadReached, Hook, hooked, site_hooks, stop_at_head
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


class Recording:
    """What records a `Clean` of `t` from one forward pass over t.ids (with grad or not; all detached):
    `hooks` read the sites and post-FFN norms at the answer position, `inputs` are the pass's keywords
    (input_ids, and a cache to fill when the path runs cached); `clean()` once the pass has run."""

    def __init__(self, lm: LM, t: Target):
        self.lm, self.t = lm, t
        self.cached = kvcache.usable(lm, t)
        self.pos = -1 if self.cached else t.pos
        self._acts: dict[int, torch.Tensor] = {}
        self._rms: dict[int, torch.Tensor] = {}
        self._cache = kvcache.empty(lm) if self.cached else None

    @property
    def hooks(self) -> list[Hook]:
        lm, pos, acts, rms = self.lm, self.pos, self._acts, self._rms

        def read(layer, act):
            acts[layer] = act[0, pos].detach()

        def norm_reader(layer):
            def fn(module, args, output):
                rms[layer] = rsqrt(module, args[0][0, pos]).detach()
            return fn

        norms = [(n, "post", norm_reader(l)) for l in range(lm.n_layers) if (n := lm.post_ffn_norm(l)) is not None]
        return site_hooks(lm, read) + norms

    @property
    def inputs(self) -> dict:
        return dict(input_ids=self.t.ids, use_cache=self.cached, **kvcache.keyword(self.lm.model, self._cache))

    def clean(self) -> Clean:
        """The recorded `Clean` (acts stacked: no view of the pass's activations)."""
        stored = None
        if self.cached and self.t.ids.shape[1] > 1:  # the prompt's cache minus the last token
            stored = [(k.detach(), v.detach()) for k, v in kvcache.prompt_part(self._cache)]
        acts = torch.stack([self._acts[l] for l in range(self.lm.n_layers)])
        return Clean(acts, dict(self._rms), self.cached, stored, self.pos)


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
    rec = Recording(lm, t)
    with torch.no_grad():  # cached: one pass over the whole prompt; the path reuses its cache minus the last token
        run_to_head(lm.model, rec.hooks + [stop_at_head(lm, rec.pos, {})], **rec.inputs)
    return rec.clean()
