"""The prompt's key/value cache (causal LMs): recorded by the clean run, rebuilt for each path pass;
and a padded batch's, over which `kn.probing.batch_stats_under` runs each row's last token."""
from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache

from ..models import LM
from ..tokens import Target


def usable(lm: LM, t: Target) -> bool:
    """Whether the path can run the answer-predicting token alone over the prompt's cache: every
    causal LM. Prompts longer than a sliding window too: the cache keeps every token in full layers
    (`empty`), so the model places the new token by the cache's length and applies the window itself."""
    return not lm.masked


def empty(lm: LM) -> DynamicCache:
    """A cache of full layers. Not DynamicCache(config=): its sliding-window layers keep only the
    window's last tokens, and a token run over them is placed at the wrong position."""
    return DynamicCache()


def prompt_part(cache: DynamicCache, row: int, length: int) -> list:
    """Per-layer (keys, values) of row `row`'s first `length` - 1 tokens (its prompt but the last token,
    right-padded: its tokens in slots [0, length)), [1, heads, length - 1, head_dim] each."""
    return [(layer.keys[row:row + 1, :, :length - 1], layer.values[row:row + 1, :, :length - 1])
            for layer in cache.layers]


def fresh(lm: LM, stored, sizes: list[int]) -> DynamicCache | None:
    """A new cache holding the stored prompt keys/values, batch sizes[i] at layer i (a cache's
    `update()` appends in place, so each pass needs its own): a stored batch of 1 expanded, of b rows
    repeated sizes[i] / b times (blocks of the b rows in order)."""
    if stored is None:
        return None
    cache = empty(lm)
    for i, (k, v) in enumerate(stored):
        cache.update(_tiled(k, sizes[i]), _tiled(v, sizes[i]), i)
    return cache


def _tiled(x: torch.Tensor, size: int) -> torch.Tensor:
    """x [b, ...] as [size, ...]: expanded (a view) when b is 1 or size, else repeated size / b times."""
    if x.shape[0] in (1, size):
        return x.expand(size, *x.shape[1:])
    return x.repeat(size // x.shape[0], *[1] * (x.dim() - 1))


def keyword(model, cache) -> dict:
    """The key/value-cache keyword of `model.forward`: `cache` in newer transformers 5.x, where
    `past_key_values` is deprecated (a FutureWarning per call), `past_key_values` before."""
    if cache is None:
        return {}
    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}


def contents(cache: DynamicCache) -> list:
    """Per-layer (keys, values) of every token in `cache`, [batch, heads, seq, head_dim] each."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def padded(stored: list[list], lengths: list[int]) -> list:
    """Per-layer (keys, values) of several prompts' caches (each prompt's: per layer [1, heads, length,
    head_dim]) as one right-padded batch [n, heads, max length, head_dim], row r's tokens in slots [0, lengths[r])."""
    width, out = max(lengths), []
    for layer in zip(*stored):  # this layer of every prompt
        k0 = layer[0][0]
        k = k0.new_zeros((len(layer), k0.shape[1], width, k0.shape[3]))
        v = torch.zeros_like(k)
        for r, (kr, vr) in enumerate(layer):
            k[r, :, :lengths[r]], v[r, :, :lengths[r]] = kr[0], vr[0]
        out.append((k, v))
    return out


def right_aligned(stored: list, lengths) -> tuple[list, torch.Tensor]:
    """Per-layer (keys, values) of a right-padded batch (row r's tokens in slots [0, lengths[r])) with
    each row's tokens moved to the last slots and the padding slots before them zeroed; and which
    slots hold a token, keep [batch, seq] (bool). A token run over it then sits at the same distance
    from each of its row's tokens as in the unpadded row (what sliding windows and ALiBi measure)."""
    k0 = stored[0][0]
    n, width = k0.shape[0], k0.shape[2]
    lengths = torch.as_tensor(lengths, device=k0.device)
    slots = torch.arange(width, device=k0.device)
    source = (slots[None] + lengths[:, None]) % width  # new slot s of row r holds old slot (s + len_r) mod width
    keep = slots[None] >= width - lengths[:, None]

    def move(x):  # layers may sit on different devices
        at = source.to(x.device)[:, None, :, None].expand(n, x.shape[1], width, x.shape[3])
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return torch.where(keep.to(x.device)[:, None, :, None], x.gather(2, at), zero)

    return [(move(k), move(v)) for k, v in stored], keep


def positions(model, position_ids: torch.Tensor) -> dict:
    """The `position_ids` keyword of `model.forward` when it takes one; none for a model that places
    tokens by the attention mask alone (ALiBi: BLOOM)."""
    return {"position_ids": position_ids} if "position_ids" in inspect.signature(model.forward).parameters else {}
