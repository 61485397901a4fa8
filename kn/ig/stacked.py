"""The path passes of several answer tokens stacked into one forward pass (causal LMs whose blocks take a
growing batch, `Family.fanout`).

A pass of one answer token streams every weight of the model for a few dozen rows, so its products run far
below the machine's rate; a stack streams them once for the rows of several tokens. The batch starts as each
token's clean row (its last token over its own prompt's key/value cache, right-aligned and padded,
`kvcache.right_aligned`, at its own position); after block l each token's layer-l rows join, rebuilt from
their own clean row as `joins.after_blocks` rebuilds them; before every block its batch-sized keywords
(attention mask, position ids and embeddings: batch = the tokens) are gathered to the rows present there
(`owners`), so that each row attends to its own prompt. Scores equal the passes one token at a time up to
float summation order (tests/unit/test_stacked_passes.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..hooks import Hook, stop_at_head
from ..models import LM
from ..tokens import Target
from . import kvcache
from .clean import Clean, run_to_head
from .head import AtHead
from .joins import _hidden, _with_hidden
from .norm import ffn_tail
from .plan import Pass, path_points


@dataclass
class Stacked:
    """One answer token in a stack: its target, clean run, baseline [n_layers, width] and (only) pass."""

    t: Target
    clean: Clean
    base: torch.Tensor
    p: Pass


def stackable(lm: LM, clean: Clean) -> bool:
    """Whether a token's pass can join a stack: a causal LM with growing blocks, over a prompt cache."""
    return lm.family.fanout and clean.cached and clean.cache is not None


def owners(items: list[Stacked], n_layers: int) -> list[torch.Tensor]:
    """The token (index into `items`) of each row present at each block, and last at the output layer
    (n_layers + 1 lists): the clean rows first, then the rows that joined after each block below, in layer
    order, token by token."""
    out, row = [], list(range(len(items)))
    for i in range(n_layers):
        out.append(torch.tensor(row))
        for j, s in enumerate(items):
            row += [j] * dict(zip(s.p.layers, s.p.counts)).get(i, 0)
    return out + [torch.tensor(row)]


def _gathered(value, index: torch.Tensor, batch: int):
    """value with every tensor whose first dimension is the stack's `batch` gathered by `index` (tuples,
    lists and dicts walked; anything else as is)."""
    if isinstance(value, torch.Tensor):
        return value.index_select(0, index.to(value.device)) if value.dim() and value.shape[0] == batch else value
    if isinstance(value, (tuple, list)):
        return type(value)(_gathered(v, index, batch) for v in value)
    if isinstance(value, dict):
        return {k: _gathered(v, index, batch) for k, v in value.items()}
    return value


def _regather(lm: LM, rows: list[torch.Tensor], batch: int) -> list[Hook]:
    """Pre-hooks that gather each block's batch-sized keywords to the rows present at it (none for a stack
    of one: its keywords broadcast)."""
    if batch == 1:
        return []

    def before(i):
        def fn(module, args, kwargs):
            return (args[:1] + _gathered(tuple(args[1:]), rows[i], batch), _gathered(kwargs, rows[i], batch))
        return fn
    return [(block, "pre", before(i)) for i, block in enumerate(lm.blocks) if len(rows[i]) != batch]


def _joins(lm: LM, items: list[Stacked], leaves: list[dict[int, torch.Tensor]], freeze: bool) -> list[Hook]:
    """Hooks that append, after block l, every token's layer-l rows: the token's clean row with its answer
    position rebuilt from the path point v, N(r + T(v)) (`joins.after_blocks`, for several clean rows)."""
    J, blocks = len(items), lm.blocks
    norm_in: dict[int, torch.Tensor] = {}  # the clean rows' residual-norm input, [J, d]

    def reader(layer):
        def fn(module, args, kwargs):
            norm_in[layer] = (args[0] if args else kwargs["input"])[:J, -1].detach()
        return fn

    def joiner(layer):
        mine = [j for j, lv in enumerate(leaves) if layer in lv]
        v = torch.cat([leaves[j][layer] for j in mine])
        owner = torch.tensor([j for j in mine for _ in range(len(leaves[j][layer]))], device=v.device)
        x = torch.stack([s.clean.acts[layer] for s in items]).to(v.dtype)  # [J, W]
        rms = {}
        if layer in items[0].clean.rms:
            clean_rms = torch.stack([s.clean.rms[layer] for s in items])  # [J, 1]
            rms = {layer: torch.cat([clean_rms, clean_rms[owner]])}
        tail, norm = ffn_tail(lm, layer, rms, freeze), lm.residual_norm(layer)

        def fn(module, args, output):
            h = _hidden(output)
            y = norm_in[layer] if norm is not None else h[:J, -1].detach()  # = r + T(x), clean rows
            tx = tail(torch.cat([x, v])).float()
            new_pos = (y.float() - tx[:J])[owner] + tx[J:]
            if norm is not None:
                new_pos = norm(new_pos.to(h.dtype))
            new = h[:J].detach()[owner].clone()
            new[:, -1] = new_pos.to(h.dtype)
            return _with_hidden(output, torch.cat([h, new]))
        return fn

    layers = sorted({l for lv in leaves for l in lv})
    hooks = [(blocks[l], "post", joiner(l)) for l in layers]
    hooks += [(n, "pre", reader(l)) for l in layers if (n := lm.residual_norm(l)) is not None]
    return hooks


def pass_forward(lm: LM, items: list[Stacked], freeze: bool) -> AtHead:
    """The stack's forward, stopped at the output layer; its leaves: each token's path points [count, W] of
    each of its pass's layers, in token order, layers ascending."""
    J, dev = len(items), lm.device
    leaves = [path_points(s.p, s.clean.acts, s.base) for s in items]
    rows = owners(items, lm.n_layers)
    lengths = [s.t.ids.shape[1] - 1 for s in items]  # each prompt's cached tokens
    stored, keep = kvcache.right_aligned(kvcache.padded([s.clean.cache for s in items], lengths), lengths)
    cache = kvcache.empty(lm)
    for i, (k, v) in enumerate(stored):
        cache.update(k[rows[i].to(k.device)], v[rows[i].to(v.device)], i)
    ids = torch.cat([s.t.ids[:, -1:] for s in items]).to(dev)
    mask = torch.cat([keep.to(dev).long(), torch.ones((J, 1), dtype=torch.long, device=dev)], dim=1)
    at = torch.tensor([[n] for n in lengths], device=dev)
    store: dict = {}
    hooks = _regather(lm, rows, J) + _joins(lm, items, leaves, freeze) + [stop_at_head(lm, -1, store)]
    with torch.enable_grad():
        run_to_head(lm.model, hooks, input_ids=ids, attention_mask=mask, use_cache=True,
                    **kvcache.keyword(lm.model, cache), **kvcache.positions(lm.model, at))
    gold = torch.tensor([items[int(j)].t.gold for j in rows[-1]])
    return AtHead(store["h"], [x for lv in leaves for x in lv.values()], gold, skip=J)
