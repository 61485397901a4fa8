"""The fast IG path: one clean run per answer token (or the screen's record of it), then passes of path rows of several layers.

Only the answer position reaches the output layer, whose gradient `head` computes in vocabulary
chunks; causal LMs run the answer-predicting token alone over the prompt's key/value cache.
Scores: (x - b) * sum_k w_k dP(gold)/d(site) at b + a_k (x - b) (Dai et al. 2022, eq. 3-4).
Each pass stops at the output layer and waits in a `walks.Walks` queue, so that the passes of several
answer tokens (`attribute_targets`) share the output layer's vocabulary walk.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import baselines
from ..hooks import frozen_params, stop_at_head
from ..models import LM
from ..settings import IG
from ..tokens import Target
from . import joins, kvcache
from .clean import Clean, clean_run, run_to_head
from .head import AtHead
from .plan import Pass, auto_batch, path_points, plan, row_bytes
from .walks import Walks


def pass_forward(lm: LM, t: Target, clean: Clean, base: torch.Tensor, p: Pass, freeze: bool) -> AtHead:
    """The pass's forward, stopped at the output layer; its leaves: each layer's path points [count, W]."""
    grow = lm.family.fanout
    leaves = path_points(p, clean.acts, base)
    head_pos = clean.pos
    if grow:
        hooks = joins.after_blocks(lm, clean, leaves, freeze)
        if not clean.cached and (trim := joins.answer_only(lm, clean.pos)):
            hooks, head_pos = hooks + trim, 0
    else:
        hooks = joins.inside_blocks(lm, clean, leaves, freeze)
    store: dict = {}
    hooks.append(stop_at_head(lm, head_pos, store))

    ids = (t.ids[:, -1:] if clean.cached else t.ids).expand(1 if grow else p.n_rows, -1)
    cache = kvcache.fresh(lm, clean.cache, p.batch_sizes(lm.n_layers, grow)) if clean.cached else None
    with torch.enable_grad():
        run_to_head(lm.model, hooks, input_ids=ids, use_cache=clean.cached, **kvcache.keyword(lm.model, cache))
    return AtHead(store["h"], list(leaves.values()), t.gold, skip=int(grow))


def weighted(p: Pass, grads) -> dict[int, torch.Tensor]:
    """sum over the pass's rows of each layer of w_k dP(gold)/d(site): {layer: [W]} (grads: the leaves')."""
    weights = p.by_layer(p.weights.to(grads[0].device))
    return {l: (g.float() * weights[l][:, None]).sum(0) for l, g in zip(p.layers, grads)}


def scores(factor: torch.Tensor, wgrad: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """factor (x - b) * wgrad [n_layers, width] (float32, CPU), zero outside `layers`."""
    s = factor * wgrad
    mask = torch.zeros(len(s), 1, dtype=torch.bool, device=s.device)
    mask[layers] = True
    return torch.where(mask, s, torch.zeros_like(s)).cpu()


def _queue(lm: LM, t: Target, ig: IG, layers: list[int], walks: Walks, clean: Clean | None = None):
    """Queue the passes of one answer token on `walks` (from `clean`, default `clean_run`'s); returns what
    gives its scores once they are walked."""
    clean = clean_run(lm, t) if clean is None else clean
    x = clean.acts
    base = baselines.resolve(lm, t, ig.baseline).to(x)
    seq = t.ids.shape[1]
    run_tokens = 1 if clean.cached else seq
    batch = ig.batch_size or auto_batch(lm, ig.steps, run_tokens, seq)
    wgrad = torch.zeros(lm.n_layers, lm.width, dtype=torch.float32, device=x.device)

    def add(p: Pass) -> None:
        def done(grads) -> None:
            for l, g in weighted(p, grads).items():
                wgrad[l] += g
        walks.add(lambda: pass_forward(lm, t, clean, base, p, ig.freeze_norm), done, p.n_rows,
                  p.n_rows * row_bytes(lm, run_tokens, seq))

    for p in plan(layers, ig.quadrature(), batch):
        add(p)
    return lambda: scores(ig.factor(x, base), wgrad, layers)


def attribute_targets(lm: LM, jobs: Sequence[tuple[Target, list[int]]], ig: IG, walks: Walks | None = None,
                      cleans: Sequence[Clean] | None = None) -> list[torch.Tensor]:
    """IG scores [n_layers, width] of each (answer token, layers: checked, ascending); the passes of all
    share output-layer walks through `walks` (default: a fresh `Walks` in `ig.head_dtype`); `cleans`: each
    job's `Clean` recorded already (`kn.gradxact.screen_targets`), else each starts with a `clean_run`."""
    walks = Walks(lm, dtype=ig.head_dtype) if walks is None else walks
    cleans = [None] * len(jobs) if cleans is None else cleans
    with frozen_params(lm.model):
        results = [_queue(lm, t, ig, layers, walks, c) for (t, layers), c in zip(jobs, cleans, strict=True)]
        walks.flush()
    return [r() for r in results]


def attribute_target(lm: LM, t: Target, ig: IG, layers: list[int]) -> torch.Tensor:
    """IG scores [n_layers, width] of one answer token (layers: checked, ascending), each pass walked alone."""
    return attribute_targets(lm, [(t, layers)], ig, Walks(lm, max_rows=0, dtype=ig.head_dtype))[0]
