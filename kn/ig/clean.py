"""The fast path's clean run: one unmodified pass per answer token, recording what the path reuses.

`Recording` holds the hooks and inputs that record a `Clean` of each of several answer tokens from one
pass over their prompts: `clean_run`'s own (one token), or a screen's batched forward (`kn.gradxact`,
zero probes: every value clean)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..hooks import HeadReached, Hook, at_rows, hooked, site_hooks, stop_at_head
from ..models import LM
from ..tokens import Target, batch_inputs
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
    """What records each target's `Clean` from one forward pass over the targets' contexts, right-padded
    into one batch (`kn.tokens.batch_inputs`; with grad or not; all detached): `hooks` read the sites and
    post-FFN norms at each row's answer position `at` [n], `inputs` are the pass's keywords (input_ids,
    an attention mask if padded, a cache to fill when the path runs cached); `cleans()` once it has run."""

    def __init__(self, lm: LM, ts: list[Target]):
        self.lm, self.ts = lm, ts
        self.cached = all(kvcache.usable(lm, t) for t in ts)
        self.at = torch.tensor([t.pos for t in ts], device=lm.device)
        self._acts: dict[int, torch.Tensor] = {}  # layer -> [n, width]
        self._rms: dict[int, torch.Tensor] = {}  # layer -> [n, 1]
        self._cache = kvcache.empty(lm) if self.cached else None

    @property
    def hooks(self) -> list[Hook]:
        lm, at, acts, rms = self.lm, self.at, self._acts, self._rms

        def read(layer, act):
            acts[layer] = at_rows(act, at).detach()

        def norm_reader(layer):
            def fn(module, args, output):
                rms[layer] = rsqrt(module, at_rows(args[0], at)).detach()
            return fn

        norms = [(n, "post", norm_reader(l)) for l in range(lm.n_layers) if (n := lm.post_ffn_norm(l)) is not None]
        return site_hooks(lm, read) + norms

    @property
    def inputs(self) -> dict:
        return dict(batch_inputs(self.lm, self.ts), use_cache=self.cached, **kvcache.keyword(self.lm.model, self._cache))

    def cleans(self) -> list[Clean]:
        """Each target's recorded `Clean` (acts stacked: no view of the pass's activations)."""
        return [self._clean(r, t) for r, t in enumerate(self.ts)]

    def _clean(self, r: int, t: Target) -> Clean:
        length, stored = t.ids.shape[1], None
        if self.cached and length > 1:  # the prompt's cache minus the last token
            stored = [(k.detach(), v.detach()) for k, v in kvcache.prompt_part(self._cache, r, length)]
        acts = torch.stack([self._acts[l][r] for l in range(self.lm.n_layers)])
        rms = {l: v[r] for l, v in self._rms.items()}
        return Clean(acts, rms, self.cached, stored, -1 if self.cached else t.pos)


def run_to_head(model, hooks, **inputs) -> None:
    """Run `model(**inputs)` under `hooks`, one of which is a `stop_at_head`."""
    with hooked(hooks):
        try:
            model(**inputs)
        except HeadReached:
            return
    raise RuntimeError("the forward pass ended without reaching the output layer")


CLEAN_TOKENS = 4096  # padded tokens per batched clean pass (`clean_runs`; memory, not results)


def clean_runs(lm: LM, ts: list[Target]) -> list[Clean]:
    """`clean_run` of each target, several a pass: sorted by length, right-padded, at most CLEAN_TOKENS
    padded tokens a pass (a masked LM's one at a time: its passes run the whole prompt anyway)."""
    if lm.masked:
        return [clean_run(lm, t) for t in ts]
    out: list[Clean | None] = [None] * len(ts)
    order = sorted(range(len(ts)), key=lambda r: ts[r].ids.shape[1])
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop + 1 - start) * ts[order[stop]].ids.shape[1] <= CLEAN_TOKENS:
            stop += 1
        rows = order[start:stop]
        rec = Recording(lm, [ts[r] for r in rows])
        with torch.no_grad():
            run_to_head(lm.model, rec.hooks + [stop_at_head(lm, rec.at, {})], **rec.inputs)
        for r, c in zip(rows, rec.cleans()):
            out[r] = c
        start = stop
    return out


def clean_run(lm: LM, t: Target) -> Clean:
    """Run the unmodified model once (to the output layer's input only)."""
    rec = Recording(lm, [t])
    with torch.no_grad():  # cached: one pass over the whole prompt; the path reuses its cache minus the last token
        run_to_head(lm.model, rec.hooks + [stop_at_head(lm, rec.at, {})], **rec.inputs)
    return rec.cleans()[0]
