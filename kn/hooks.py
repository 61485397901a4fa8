"""The one hook primitive: every kernel reads, replaces and restores activations through it."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

# (module, "pre" | "post", fn). pre: fn(module, args, kwargs) -> None | (args, kwargs);
# post: fn(module, args, output) -> None | output.
Hook = tuple[nn.Module, str, Callable]


@contextmanager
def hooked(hooks: Iterable[Hook]) -> Iterator[None]:
    """Register forward hooks for the duration of the block; they are removed in `finally`."""
    handles = []
    try:
        for module, kind, fn in hooks:
            if kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            elif kind == "post":
                handles.append(module.register_forward_hook(fn))
            else:
                raise ValueError(f"hook kind must be 'pre' or 'post', not {kind!r}")
        yield
    finally:
        for h in handles:
            h.remove()


def site_hooks(lm, edit: Callable[[int, torch.Tensor], torch.Tensor | None], layers=None) -> list[Hook]:
    """Hooks on the neuron site (input of the FFN output projection) of `layers` (default all).

    edit(layer, act) gets the site tensor [batch, seq, width] and returns a replacement or None (read only).
    """
    fam = lm.family
    shapes: dict[int, torch.Size] = {}  # flat_ffn families: the block input's [batch, seq] per layer

    def make(layer: int):
        def fn(module, args, kwargs):
            act = args[0]
            if fam.flat_ffn:
                act = act.view(*shapes[layer][:2], act.shape[-1])
            new = edit(layer, act)
            if new is None:
                return None
            return (new.reshape(args[0].shape), *args[1:]), kwargs
        return fn

    def shape_reader(layer: int):
        def fn(module, args, kwargs):
            shapes[layer] = (args[0] if args else kwargs["hidden_states"]).shape
        return fn

    layers = range(lm.n_layers) if layers is None else layers
    hooks = [(lm.down_proj(l), "pre", make(l)) for l in layers]
    if fam.flat_ffn:
        blocks = lm.blocks
        hooks += [(blocks[l], "pre", shape_reader(l)) for l in layers]
    return hooks


def head_at(lm, pos: int) -> Hook:
    """Only position `pos` reaches the output layer: its input [B, T, d] becomes [B, 1, d]."""
    def fn(module, args, kwargs):
        h = args[0]
        h = h[:, pos:pos + 1] if pos != -1 else h[:, -1:]
        return (h.contiguous(), *args[1:]), kwargs  # a strided slice would send linear to a slow bmm
    return (lm.head, "pre", fn)


def head_from(lm, start: int) -> Hook:
    """Only positions `start`.. reach the output layer: its input [B, T, d] becomes [B, T - start, d]."""
    def fn(module, args, kwargs):
        return (args[0][:, start:].contiguous(), *args[1:]), kwargs
    return (lm.head, "pre", fn)


class HeadReached(Exception):
    """Raised by the `stop_at_head` hook: the forward pass ends where the output layer would start."""


def at_rows(x: torch.Tensor, pos: int | torch.Tensor) -> torch.Tensor:
    """x [B, T, ...] at position `pos` of every row (an int) or at pos[r] in row r (pos [B]): [B, ...]."""
    if isinstance(pos, int):
        return x[:, pos]
    return x[torch.arange(len(x), device=x.device), pos.to(x.device)]


def stop_at_head(lm, pos: int | torch.Tensor, store: dict) -> Hook:
    """Record the output layer's input at position `pos` (`at_rows`) in store["h"] [B, d], then end the pass."""
    def fn(module, args, kwargs):
        store["h"] = at_rows(args[0], pos)
        raise HeadReached
    return (lm.head, "pre", fn)


def input_ids_hook(lm, store: dict) -> Hook:
    """A hook that records the input ids of each forward pass in store["ids"] [batch, seq]."""
    def fn(module, args, kwargs):
        store["ids"] = args[0] if args else kwargs.get("input")
    return (lm.model.get_input_embeddings(), "pre", fn)


def count(model: nn.Module) -> int:
    """Number of forward hooks on any submodule (0 when kn left nothing behind)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@contextmanager
def frozen_params(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad inside the block (gradients flow to activations only)."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
