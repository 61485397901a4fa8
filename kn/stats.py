"""Small statistics over facts: a seeded bootstrap interval of a mean; the paper's Succ."""
from __future__ import annotations

import math

import numpy as np


def bootstrap_mean(x, *, n: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `x` (NaNs dropped) and a percentile bootstrap interval over its
    items (`n` resamples, seeded); NaNs for nothing, the mean itself for one item."""
    v = np.asarray(x, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) == 1:
        return m, m, m
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n, len(v)))].mean(1)
    a = (1 - level) / 2
    return m, float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def succ(sup_related: float, sup_unrelated: float, amp_related: float, amp_unrelated: float) -> float:
    """Chen et al. (2024): |sup_related / sup_unrelated| + |amp_related / amp_unrelated| (inf over 0)."""
    try:
        return abs(sup_related / sup_unrelated) + abs(amp_related / amp_unrelated)
    except ZeroDivisionError:
        return math.inf
