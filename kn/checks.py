"""Argument checks at kn's public boundary: each names the argument and says how to fix it.

Inside kn the types are trusted; these run once, where a value enters. Every failure is an
`ArgumentError`, a ValueError and a TypeError at once (catch either).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from .neuron import Neuron


class ArgumentError(ValueError, TypeError):
    """A bad argument to a kn function; the message names it and says what would be accepted."""


def text(value, name: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise ArgumentError(f"{name} must be a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise ArgumentError(f"{name} is empty; pass some text")
    return value


def texts(value, name: str, *, at_least: int = 1) -> list[str]:
    """A list of non-empty strings from one string (one item) or any iterable (read once)."""
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, dict)):
        items = list(value)
    else:
        raise ArgumentError(f"{name} must be a string or a list of strings, got {type(value).__name__}")
    for i, v in enumerate(items):
        text(v, f"{name}[{i}]")
    if len(items) < at_least:
        raise ArgumentError(f"{name} holds {len(items)} item(s); at least {at_least} needed")
    return items


def names(value, name: str, *, at_least: int = 1) -> list[str]:
    """Names from the forms people type: "a,b", "a, b" or a list ["a", "b"] (each stripped); one string
    is one name or a comma-separated list of names, never its characters."""
    if isinstance(value, str):
        items = [v.strip() for v in value.strip().strip(",").split(",")]  # a comma at either end: nothing
        if any(not v for v in items) and value.strip().strip(","):
            raise ArgumentError(f"{name}={value!r} has an empty name between commas; write names as \"a,b\"")
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, dict)):
        items = [text(v, f"{name}[{i}]").strip() for i, v in enumerate(list(value))]
    else:
        raise ArgumentError(f"{name} must be a name, names separated by commas (\"a,b\") or a list of names, got "
                            f"{type(value).__name__} {value!r}")
    items = [v for v in items if v]
    if len(items) < at_least:
        raise ArgumentError(f"{name} names {len(items)} item(s); at least {at_least} needed")
    return items


def integer(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An int (numpy ints and 0-d tensors too; not bool, not a float) within [low, high]."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ArgumentError(f"{name} must be {_range(low, high)}, got {value}")
    return value


def number(value, name: str, *, low: float | None = None, high: float | None = None) -> float:
    """A finite real number (not bool) within [low, high]."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ArgumentError(f"{name} must be finite, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ArgumentError(f"{name} must be {_range(low, high)}, got {value:g}")
    return value


def neurons(lm, value, name: str = "neurons") -> list[Neuron]:
    """(layer, index) pairs of `lm`, read once, duplicates dropped (first order kept)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ArgumentError(f"{name} must be a list of (layer, index) pairs, got {type(value).__name__}")
    out: dict[Neuron, None] = {}
    for n in value:
        if isinstance(n, (str, bytes)) or not isinstance(n, Iterable) or len(n := tuple(n)) != 2:
            raise ArgumentError(f"each of {name} is a (layer, index) pair, got {n!r}")
        layer, index = integer(n[0], f"the layer of {name} entry {n!r}"), integer(n[1], f"the index of {name} entry {n!r}")
        if not 0 <= layer < lm.n_layers:
            raise ArgumentError(f"{name}: layer {layer} is out of range: {lm.name} has {lm.n_layers} layers "
                                f"(0..{lm.n_layers - 1})")
        if not 0 <= index < lm.width:
            raise ArgumentError(f"{name}: neuron index {index} is out of range: the FFN width of {lm.name} is "
                                f"{lm.width} (0..{lm.width - 1})")
        out[(layer, index)] = None
    return list(out)


def by_layer(lm, value, name: str = "neurons") -> dict[int, list[int]]:
    """`neurons` grouped by layer {layer: [index, ...]}."""
    grouped: dict[int, list[int]] = {}
    for layer, index in neurons(lm, value, name):
        grouped.setdefault(layer, []).append(index)
    return grouped


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f">= {low}" if low is not None else f"<= {high}"
