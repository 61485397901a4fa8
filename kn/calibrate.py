"""The cheapest quadrature setting that is accurate enough on a model, measured on a few prompts.

How many IG points a model needs depends on the model (book/steps.md: Gauss-Legendre with 4 points
matches the paper's 20-point error on gemma-3-270m; smollm2-135m needs 16 trapezoid points). Before a
long run, `calibrate` measures each rule at a few point counts against an exact integral
(Gauss-Legendre with `exact` nodes) on the prompts given and returns the setting with the fewest
points whose worst error is within the tolerance; the run then uses it. Its cost is that of
attributing the prompts once per candidate, paid once per model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch

from .attribution import attribute
from .models import LM
from .quadrature import RULES, quadrature
from .settings import IG

STEPS = (2, 3, 4, 6, 8, 10, 12, 16, 20)
PAPER = ("riemann_left", 20)


@dataclass(frozen=True)
class Calibration:
    """The chosen setting (`settings`: the base `kn.IG` with its rule and steps), its worst error, the
    tolerance it met, and every candidate measured: (rule, steps, worst error) tuples. Error on a
    prompt: max |A - A_exact| / max |A_exact| over the [layers, width] matrix; worst over the prompts."""

    settings: IG
    error: float
    tolerance: float
    exact: int
    grid: tuple[tuple[str, int, float], ...]

    @property
    def rule(self) -> str:
        return self.settings.rule

    @property
    def steps(self) -> int:
        return self.settings.steps


def relative_error(scores: torch.Tensor, exact: torch.Tensor) -> float:
    """max |scores - exact| / max |exact| (the absolute difference when `exact` is all zero)."""
    scores, exact = scores.double(), exact.double()
    scale = float(exact.abs().max())
    diff = float((scores - exact).abs().max())
    return diff / scale if scale > 0 else diff


def calibrate(lm: LM, queries: Sequence[tuple[str, str]], settings: IG | None = None, *,
              tolerance: float | None = None, rules: Sequence[str] | None = None,
              steps: Sequence[int] = STEPS, exact: int = 64) -> Calibration:
    """The setting with the fewest points (then the smallest worst error) among `rules` x `steps`
    whose worst error over `queries` ((prompt, answer) pairs) against Gauss-Legendre with `exact`
    nodes is at most `tolerance` (default: the paper setting's, riemann_left with 20 points, on the
    same queries). `settings` carries everything else (baseline, multiplier, ...). Falls back to the
    paper setting when no candidate qualifies (its error then says by how much)."""
    base = settings if settings is not None else IG()
    if not isinstance(base, IG):
        raise TypeError(f"settings must be a kn.IG, got {type(base).__name__}")
    queries = [tuple(q) for q in queries]
    if not queries or any(len(q) != 2 or not all(isinstance(s, str) for s in q) for q in queries):
        raise ValueError("queries must be a non-empty list of (prompt, answer) string pairs")
    rules = list(RULES) if rules is None else list(rules)
    bad = [r for r in rules if r not in RULES]
    if bad:
        raise ValueError(f"unknown rule(s) {bad}; choose from {list(RULES)} (kn.RULES)")
    if not steps or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in steps):
        raise ValueError(f"steps must be positive integers, got {list(steps)!r}")
    if isinstance(exact, bool) or not isinstance(exact, int) or exact < 2:
        raise ValueError(f"exact must be an integer >= 2 (Gauss-Legendre nodes), got {exact!r}")
    if tolerance is not None and not tolerance >= 0:
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")

    def setting(rule: str, m: int) -> IG:
        return dataclasses.replace(base, rule=rule, steps=m)

    def accepts(rule: str, m: int) -> bool:  # a rule may need more points than 1 (the trapezoid rule: 2)
        try:
            quadrature(rule, m)
        except ValueError:
            return False
        return True

    truth = [attribute(lm, p, a, setting("gauss_legendre", exact)) for p, a in queries]
    measured: dict[tuple[str, int], float] = {}

    def worst(rule: str, m: int) -> float:
        if (rule, m) not in measured:
            measured[rule, m] = max(relative_error(attribute(lm, p, a, setting(rule, m)), t)
                                    for (p, a), t in zip(queries, truth))
        return measured[rule, m]

    if tolerance is None:
        tolerance = worst(*PAPER)
    grid = tuple((r, m, worst(r, m)) for r in rules for m in sorted(set(steps)) if accepts(r, m))
    ok = sorted((m, e, r) for r, m, e in grid if e <= tolerance)
    (m, e, r) = ok[0] if ok else (PAPER[1], worst(*PAPER), PAPER[0])
    return Calibration(setting(r, m), e, float(tolerance), exact, grid)
