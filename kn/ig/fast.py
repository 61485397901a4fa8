"""The fast IG path: one clean run per answer token (or the screen's record of it), then passes of path rows of several layers.

Only the answer position reaches the output layer, whose gradient `head` computes in vocabulary
chunks; causal LMs run the answer-predicting token alone over the prompt's key/value cache.
Scores: (x - b) * sum_k w_k dP(gold)/d(site) at b + a_k (x - b) (Dai et al. 2022, eq. 3-4).
Each pass stops at the output layer and waits in a `walks.Walks` queue, so that the passes of several
answer tokens (`attribute_targets`) share the output layer's vocabulary walk; in a causal LM whose blocks
take a growing batch, the passes of several answer tokens are one stacked pass (`stacked`), which streams
the model's weights once for all their rows.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import baselines
from ..hooks import frozen_params, stop_at_head
from ..models import LM
from ..settings import IG
from ..tokens import Target
from . import joins, kvcache, stacked
from .clean import Clean, clean_run, clean_runs, run_to_head
from .head import AtHead
from .plan import Pass, auto_batch, path_points, plan, row_bytes
from .walks import Walks

STACK_ROWS = 256  # path rows per stacked pass (`kn.ig.stacked`): past this the products run at full rate


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


class _Token:
    """One answer token's share of `attribute_targets`: its clean run, baseline, passes and the weighted
    gradients they add up to; `scores()` once they are walked."""

    def __init__(self, lm: LM, t: Target, ig: IG, layers: list[int], clean: Clean | None):
        self.lm, self.t, self.ig, self.layers = lm, t, ig, layers
        self.clean = clean_run(lm, t) if clean is None else clean
        x = self.clean.acts
        self.base = baselines.resolve(lm, t, ig.baseline).to(x)
        seq = t.ids.shape[1]
        self.run_tokens = 1 if self.clean.cached else seq
        self.row_bytes = row_bytes(lm, self.run_tokens, seq)
        batch = ig.batch_size or auto_batch(lm, ig.steps, self.run_tokens, seq)
        self.passes = plan(layers, ig.quadrature(), batch)
        self.wgrad = torch.zeros(lm.n_layers, lm.width, dtype=torch.float32, device=x.device)

    @property
    def stackable(self) -> bool:
        """One pass, sized by kn (not by the settings' batch_size), that can join a stack."""
        return self.ig.batch_size is None and len(self.passes) == 1 and stacked.stackable(self.lm, self.clean)

    def add(self, p: Pass, grads) -> None:
        for l, g in weighted(p, grads).items():
            self.wgrad[l] += g

    def queue(self, walks: Walks) -> None:
        """Queue each of its passes alone."""
        for p in self.passes:
            walks.add(lambda p=p: pass_forward(self.lm, self.t, self.clean, self.base, p, self.ig.freeze_norm),
                      lambda grads, p=p: self.add(p, grads), p.n_rows, p.n_rows * self.row_bytes)

    def scores(self) -> torch.Tensor:
        return scores(self.ig.factor(self.clean.acts, self.base), self.wgrad, self.layers)


def _queue_stack(lm: LM, tokens: list[_Token], walks: Walks, freeze: bool) -> None:
    """Queue the passes of `tokens` (each `stackable`) as one stacked pass (`kn.ig.stacked`)."""
    if len(tokens) == 1:
        return tokens[0].queue(walks)
    items = [stacked.Stacked(k.t, k.clean, k.base, k.passes[0]) for k in tokens]
    spans = [len(k.passes[0].layers) for k in tokens]

    def done(grads) -> None:
        start = 0
        for k, n in zip(tokens, spans):
            k.add(k.passes[0], grads[start:start + n])
            start += n

    rows = sum(k.passes[0].n_rows for k in tokens)
    walks.add(lambda: stacked.pass_forward(lm, items, freeze), done, rows,
              sum(k.passes[0].n_rows * k.row_bytes for k in tokens))


def _queue_all(lm: LM, tokens: list[_Token], walks: Walks, freeze: bool) -> None:
    """Queue every token's passes: the stackable ones in stacks of at most STACK_ROWS path rows and the
    walks' caps (rows and bytes), the others alone."""
    stack: list[_Token] = []
    most = min(STACK_ROWS, walks.max_rows)
    for k in tokens:
        if not k.stackable:
            k.queue(walks)
            continue
        rows, nbytes = (sum(x.passes[0].n_rows for x in stack + [k]),
                        sum(x.passes[0].n_rows * x.row_bytes for x in stack + [k]))
        if stack and (rows > most or nbytes > walks.budget):
            _queue_stack(lm, stack, walks, freeze)
            stack = []
        stack.append(k)
    if stack:
        _queue_stack(lm, stack, walks, freeze)


def attribute_targets(lm: LM, jobs: Sequence[tuple[Target, list[int]]], ig: IG, walks: Walks | None = None,
                      cleans: Sequence[Clean] | None = None) -> list[torch.Tensor]:
    """IG scores [n_layers, width] of each (answer token, layers: checked, ascending); the passes of all
    share output-layer walks through `walks` (default: a fresh `Walks` in `ig.head_dtype`), and a causal
    LM's run stacked several tokens a pass (`kn.ig.stacked`); `cleans`: each job's `Clean` recorded already
    (`kn.gradxact.screen_targets`), else they are recorded several a pass (`clean_runs`; one by one when
    `walks` walks every pass alone)."""
    walks = Walks(lm, dtype=ig.head_dtype) if walks is None else walks
    with frozen_params(lm.model):
        if cleans is None:
            cleans = clean_runs(lm, [t for t, _ in jobs]) if walks.max_rows else [None] * len(jobs)
        tokens = [_Token(lm, t, ig, layers, c) for (t, layers), c in zip(jobs, cleans, strict=True)]
        if walks.max_rows:
            _queue_all(lm, tokens, walks, ig.freeze_norm)
        else:  # every pass walked alone
            for k in tokens:
                k.queue(walks)
        walks.flush()
    return [k.scores() for k in tokens]


def attribute_target(lm: LM, t: Target, ig: IG, layers: list[int]) -> torch.Tensor:
    """IG scores [n_layers, width] of one answer token (layers: checked, ascending), each pass walked alone."""
    return attribute_targets(lm, [(t, layers)], ig, Walks(lm, max_rows=0, dtype=ig.head_dtype))[0]
