"""How the fast path puts path rows into the model: hooks, one family-independent unit each.

`after_blocks`: the batch starts as the clean row; right after block l it grows by layer l's rows,
whose block output is the clean row's with the answer position rebuilt from the path point v,
N(r + T(v)) (r + T(x) read from the clean row, T the FFN tail, N the residual norm of post-LN
blocks; see `arch.residual_norm`), so a row runs only the blocks above its own layer.
`inside_blocks` (families without `fanout`): all rows from the input, the site replaced inside the
block. `answer_only`: masked LMs run over the whole prompt; the last block's FFN needs only the
answer position, and only that position leaves the block.
"""
from __future__ import annotations

import torch

from ..hooks import Hook, site_hooks
from ..models import LM
from .clean import Clean
from .norm import ffn_tail, frozen


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output, h):
    return (h, *output[1:]) if isinstance(output, tuple) else h


def after_blocks(lm: LM, clean: Clean, leaves: dict[int, torch.Tensor], freeze: bool) -> list[Hook]:
    """Hooks that append each layer's path rows [n_l, W] (leaves, ascending layers) after its block."""
    pos, blocks = clean.pos, lm.blocks
    norm_in: dict[int, torch.Tensor] = {}  # the clean row's residual-norm input at the position, [1, d]

    def reader(layer):
        def fn(module, args, kwargs):
            norm_in[layer] = (args[0] if args else kwargs["input"])[:1, pos].detach()
        return fn

    def joiner(layer, v):
        tail, norm = ffn_tail(lm, layer, clean.rms, freeze), lm.residual_norm(layer)
        x = clean.acts[layer][None].to(v.dtype)

        def fn(module, args, output):
            h = _hidden(output)
            y = norm_in[layer] if norm is not None else h[:1, pos].detach()  # = r + T(x), clean row
            tx = tail(torch.cat([x, v])).float()  # one matmul for the clean row and the path rows
            new_pos = (y.float() - tx[:1]) + tx[1:]
            if norm is not None:
                new_pos = norm(new_pos.to(h.dtype))
            new = h[:1].detach().expand(len(v), *h.shape[1:]).clone()
            new[:, pos] = new_pos.to(h.dtype)
            return _with_hidden(output, torch.cat([h, new]))
        return fn

    hooks = [(blocks[l], "post", joiner(l, v)) for l, v in leaves.items()]
    hooks += [(n, "pre", reader(l)) for l in leaves if (n := lm.residual_norm(l)) is not None]
    return hooks


def inside_blocks(lm: LM, clean: Clean, leaves: dict[int, torch.Tensor], freeze: bool) -> list[Hook]:
    """Hooks that write each layer's path rows into its site (rows in leaves' order, from row 0), with
    the post-FFN norm of those rows frozen when `freeze`."""
    pos, rows, start = clean.pos, {}, 0
    for l, v in leaves.items():
        rows[l] = torch.arange(start, start + len(v), device=v.device)
        start += len(v)

    def replace(layer, act):
        act = act.clone()
        act[rows[layer], pos] = leaves[layer].to(act.dtype)
        return act

    def freezer(layer):
        def fn(module, args, output):
            r = rows[layer]
            out = output.clone()
            out[r, pos] = frozen(module, args[0][r, pos], output[r, pos], clean.rms[layer])
            return out
        return fn

    hooks = site_hooks(lm, replace, list(leaves))
    if freeze:
        hooks += [(n, "post", freezer(l)) for l in leaves if (n := lm.post_ffn_norm(l)) is not None]
    return hooks


def answer_only(lm: LM, pos: int) -> list[Hook]:
    """Hooks that feed the last block's FFN the answer position alone and pass only that position on
    (families with `ffn_in`, else none); the output layer then sees that position at index 0."""
    last = lm.n_layers - 1
    ffn = lm.ffn_in(last)
    if ffn is None:
        return []

    def to_answer(module, args, kwargs):
        a = args[0] if args else kwargs["hidden_states"]
        a = a[:, pos:pos + 1]
        return ((a, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": a})

    def keep_answer(module, args, output):
        return _with_hidden(output, _hidden(output)[:, pos:pos + 1])

    return [(ffn, "pre", to_answer), (lm.blocks[last], "post", keep_answer)]
