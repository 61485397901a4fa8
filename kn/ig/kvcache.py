"""The prompt's key/value cache (causal LMs): recorded by the clean run, rebuilt for each path pass."""
from __future__ import annotations

import inspect

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


def prompt_part(cache: DynamicCache) -> list:
    """Per-layer (keys, values) of all but the last token, [1, heads, seq - 1, head_dim] each."""
    return [(layer.keys[:, :, :-1], layer.values[:, :, :-1]) for layer in cache.layers]


def fresh(lm: LM, stored, sizes: list[int]) -> DynamicCache | None:
    """A new cache holding the stored prompt keys/values, expanded to batch sizes[i] at layer i (a
    cache's `update()` appends in place, so each pass needs its own)."""
    if stored is None:
        return None
    cache = empty(lm)
    for i, (k, v) in enumerate(stored):
        cache.update(k.expand(sizes[i], *k.shape[1:]), v.expand(sizes[i], *v.shape[1:]), i)
    return cache


def keyword(model, cache) -> dict:
    """The key/value-cache keyword of `model.forward`: `cache` in newer transformers 5.x, where
    `past_key_values` is deprecated (a FutureWarning per call), `past_key_values` before."""
    if cache is None:
        return {}
    params = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in params else "past_key_values": cache}
