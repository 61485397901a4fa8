"""Quadrature rules for the IG path integral: points and weights on [0, 1], as data.

IG approximates integral_0^1 f(a) da by sum_k w_k f(a_k), with f(a) = dP(gold)/d(site) at
b + a (x - b) (Dai et al. 2022, eq. 4: left Riemann). A rule is one entry of `RULES`: a function of
the number of points m returning (points [m], weights [m]) in float64. The kernels cast them to the
model's dtype; the scoring uses the weights, so a new rule needs no other change.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch


class Quadrature(NamedTuple):
    """Points a_k [m] on [0, 1] and weights w_k [m] (float64)."""

    points: torch.Tensor
    weights: torch.Tensor


def _uniform(m: int) -> torch.Tensor:
    return torch.full((m,), 1.0 / m, dtype=torch.float64)


def riemann_left(m: int) -> Quadrature:
    """Dai et al.'s rule (the default): a_k = k / m, k = 0..m-1, weights 1 / m."""
    return Quadrature(torch.arange(m, dtype=torch.float64) / m, _uniform(m))


def linspace(m: int) -> Quadrature:
    """The EleutherAI package's: a_k = linspace(0, 1, m) (both ends), weights 1 / m."""
    return Quadrature(torch.linspace(0, 1, m, dtype=torch.float64), _uniform(m))


def riemann_trapezoid(m: int) -> Quadrature:
    """The trapezoid rule on linspace(0, 1, m): weights h/2, h, ..., h, h/2 with h = 1 / (m - 1); m >= 2."""
    if m < 2:
        raise ValueError(f"steps must be >= 2 for rule 'riemann_trapezoid', got {m}")
    w = torch.full((m,), 1.0 / (m - 1), dtype=torch.float64)
    w[[0, -1]] /= 2
    return Quadrature(torch.linspace(0, 1, m, dtype=torch.float64), w)


def gauss_legendre(m: int) -> Quadrature:
    """Gauss-Legendre with m nodes mapped from [-1, 1] to [0, 1]: exact for polynomials of degree <= 2m - 1."""
    x, w = np.polynomial.legendre.leggauss(m)
    return Quadrature(torch.from_numpy((x + 1) / 2), torch.from_numpy(w / 2))


RULES: dict[str, Callable[[int], Quadrature]] = {
    "riemann_left": riemann_left,
    "linspace": linspace,
    "riemann_trapezoid": riemann_trapezoid,
    "gauss_legendre": gauss_legendre,
}


MAX_STEPS = 1000  # path points: each is a forward and backward pass per prompt; gauss_legendre's nodes cost O(m^3)


def quadrature(rule: str, steps: int) -> Quadrature:
    """The points and weights of `rule` with `steps` points (1..MAX_STEPS); ValueError names the valid choices."""
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {list(RULES)} (kn.RULES)")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if steps > MAX_STEPS:
        raise ValueError(f"steps={steps} costs {steps} forward and backward passes per prompt and answer token "
                         f"(and {rule}'s points at that size); kn's bound is {MAX_STEPS} (kn.quadrature.MAX_STEPS): "
                         "IG converges long before (kn calibrate finds the steps a model needs)")
    return RULES[rule](steps)


def rule_table(m: int):
    """A row per rule of `RULES` with m points: its points and weights (rounded to 4 decimals) and the
    sum of its weights."""
    import pandas as pd

    rows = []
    for name, rule in RULES.items():
        q = rule(m)
        rows.append({"rule": name, "points": np.round(q.points.numpy(), 4).tolist(),
                     "weights": np.round(q.weights.numpy(), 4).tolist(), "sum of weights": float(q.weights.sum())})
    return pd.DataFrame(rows)
