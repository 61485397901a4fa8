"""The cheapest quadrature setting that is accurate enough on a model, measured on a few prompts.

How many IG points a model needs depends on the model (book/steps.md: Gauss-Legendre with 4 points
beats the paper's 20 points on gemma-3-270m; smollm2-135m needs about 20). Before a long run,
`calibrate` measures candidate settings against an exact integral (Gauss-Legendre with `exact` nodes)
on a few prompts and returns the cheapest one that is, on every prompt, no less accurate than a
reference setting (the paper's by default). The criterion is per prompt because the convergence
study found that a worst-over-prompts tolerance does not carry over to other facts (one bad prompt
sets it), while "no worse on every calibration prompt" does (`kn.convergence.transfer`).
Candidates are measured cheapest first, so the cost is the exact integral plus the candidates up to
the chosen one, paid once per model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .attribution import attribute
from .models import LM
from . import checks
from .quadrature import MAX_STEPS, RULES, quadrature
from .settings import IG

STEPS = (2, 3, 4, 6, 8, 10, 12, 16, 20)
PAPER = ("riemann_left", 20)

Errors = tuple[float, ...]  # one relative error per query


@dataclass(frozen=True)
class Calibration:
    """The chosen setting (`settings`: the base `kn.IG` with its rule and steps) and its error on each
    query, the bound it met on each query (`against`'s errors, or the tolerance), and every candidate
    measured, cheapest first: (rule, steps, errors) tuples. Error on a query: max |A - A_exact| /
    max |A_exact| over the [layers, width] matrix."""

    settings: IG
    errors: Errors
    bounds: Errors
    against: tuple[str, int] | None
    exact: int
    grid: tuple[tuple[str, int, Errors], ...]

    @property
    def rule(self) -> str:
        return self.settings.rule

    @property
    def steps(self) -> int:
        return self.settings.steps

    @property
    def error(self) -> float:
        """The chosen setting's worst error over the queries."""
        return max(self.errors)

    def tables(self, queries: Sequence[tuple[str, str]]) -> dict:
        """{"candidates": a row per (candidate, query) with its error and the bound, "chosen": one row}
        (pandas DataFrames, for a recording)."""
        import pandas as pd

        rows = [{"rule": r, "steps": m, "query": j, "prompt": queries[j][0], "answer": str(queries[j][1]),
                 "error": float(e), "bound": float(self.bounds[j]), "chosen": (r, m) == (self.rule, self.steps)}
                for r, m, errs in self.grid for j, e in enumerate(errs)]
        chosen = {"rule": self.rule, "steps": self.steps, "worst_error": self.error,
                  "against": ":".join(map(str, self.against)) if self.against else None, "exact": self.exact,
                  "queries": len(queries), **{k: v for k, v in self.settings.to_dict().items() if k not in ("rule", "steps")}}
        return {"candidates": pd.DataFrame(rows), "chosen": pd.DataFrame([chosen])}


def relative_error(scores: torch.Tensor, exact: torch.Tensor) -> float:
    """max |scores - exact| / max |exact| (the absolute difference when `exact` is all zero)."""
    scores, exact = scores.double(), exact.double()
    scale = float(exact.abs().max())
    diff = float((scores - exact).abs().max())
    return diff / scale if scale > 0 else diff


def accepts(rule: str, m: int) -> bool:
    """Whether `rule` has an m-point form (the trapezoid rule needs 2)."""
    try:
        quadrature(rule, m)
    except ValueError:
        return False
    return True


def search(measure: Callable[[str, int], Errors], candidates: Sequence[tuple[str, int]],
           bounds: Errors) -> tuple[tuple[str, int, Errors] | None, list[tuple[str, int, Errors]]]:
    """Point counts in ascending order, every candidate (rule, steps) at each: the first count at which
    some candidate's errors (`measure(rule, m)`, one per query) are within `bounds` on every query wins,
    and among its qualifying candidates the one with the smallest worst error. Returns (the choice or
    None, the candidates measured, cheapest first)."""
    grid = []
    for m in sorted({m for _, m in candidates}):
        level = [(r, m, tuple(measure(r, m))) for r, n in candidates if n == m]
        grid += level
        ok = [c for c in level if all(e <= b for e, b in zip(c[2], bounds))]
        if ok:
            return min(ok, key=lambda c: max(c[2])), grid
    return None, grid


def queries_of(lm: LM, facts, languages: Sequence[str], per_fact: int = 1) -> list[tuple[str, str]]:
    """The first `per_fact` (prompt, answer) pairs of each fact in each language, as `kn.run` asks them
    (`kn.data.prepare`); facts the model cannot be asked in a language (no usable template, an answer
    its tokenizer cannot represent) are left out there."""
    from .data.prepare import prepare_fact

    out = []
    for f in facts:
        for lang in languages:
            try:
                p = prepare_fact(f, lm, lang) if f.has(lang) else None
            except ValueError:
                continue
            if p is not None and p.usable:
                out += list(zip(p.prompts, p.answers))[:per_fact]
    return out


def calibrate(lm: LM, queries: Sequence[tuple[str, str]], settings: IG | None = None, *,
              against: tuple[str, int] = PAPER, tolerance: float | None = None,
              rules: Sequence[str] | None = None, steps: Sequence[int] = STEPS, exact: int = 64) -> Calibration:
    """The cheapest setting among `rules` x `steps` whose error against Gauss-Legendre with `exact`
    nodes is, on every query ((prompt, answer) pairs), at most `against`'s error on that query (a
    (rule, steps) setting; default the paper's, riemann_left with 20 points), or at most `tolerance`
    when one is given. `settings` carries everything else (baseline, multiplier, ...). Falls back to
    `against` when no candidate qualifies (its errors then say by how much)."""
    base = settings if settings is not None else IG()
    if not isinstance(base, IG):
        raise TypeError(f"settings must be a kn.IG, got {type(base).__name__}")
    queries = [tuple(q) for q in queries]
    if not queries or any(len(q) != 2 or not all(isinstance(s, str) for s in q) for q in queries):
        raise ValueError("queries must be a non-empty list of (prompt, answer) string pairs")
    rules = list(RULES) if rules is None else checks.names(rules, "rules")
    bad = [r for r in rules if r not in RULES]
    if bad:
        raise ValueError(f"unknown rule(s) {bad}; choose from {list(RULES)} (kn.RULES)")
    steps = [steps] if isinstance(steps, int) else steps
    if not isinstance(steps, Sequence) or isinstance(steps, str) or not steps or \
            any(isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= MAX_STEPS for m in steps):
        raise ValueError(f"steps must be an integer or a list of integers between 1 and {MAX_STEPS} "
                         f"(kn.quadrature.MAX_STEPS), got {steps!r}")
    exact = checks.integer(exact, "exact", low=2, high=MAX_STEPS)
    if tolerance is not None:
        tolerance = checks.number(tolerance, "tolerance", low=0.0)
    against = tuple(against)
    if len(against) != 2 or against[0] not in RULES or not accepts(*against):
        raise ValueError(f"against must be a (rule, steps) setting of kn.RULES, e.g. {PAPER}, got {against!r}")

    def setting(rule: str, m: int) -> IG:
        return dataclasses.replace(base, rule=rule, steps=m)

    truth = [attribute(lm, p, a, setting("gauss_legendre", exact)) for p, a in queries]
    measured: dict[tuple[str, int], Errors] = {}

    def measure(rule: str, m: int) -> Errors:
        if (rule, m) not in measured:
            measured[rule, m] = tuple(relative_error(attribute(lm, p, a, setting(rule, m)), t)
                                      for (p, a), t in zip(queries, truth))
        return measured[rule, m]

    bounds = (float(tolerance),) * len(queries) if tolerance is not None else measure(*against)
    chosen, grid = search(measure, [(r, m) for r in rules for m in dict.fromkeys(steps) if accepts(r, m)], bounds)
    r, m, errs = chosen or (*against, measure(*against))
    return Calibration(setting(r, m), errs, bounds, None if tolerance is not None else against, exact, tuple(grid))


def timed_against_exact(lm: LM, prompt: str, answer: str, settings: Sequence[tuple[str, int]], exact: int):
    """A row per (rule, steps) of `settings` on one prompt, against a Gauss-Legendre integral of `exact`
    nodes: the setting, its `relative_error`, the seconds its attribution took on this machine, the size
    of its coarse set (`kn.localization.coarse`) and that set's Jaccard with the exact integral's."""
    import time

    import pandas as pd

    from .localization import coarse

    def timed(rule, steps):
        t = time.perf_counter()
        scores = attribute(lm, prompt, answer, rule=rule, steps=steps).double()
        return scores, time.perf_counter() - t

    ref, _ = timed("gauss_legendre", exact)
    exact_set = coarse(ref.float())
    rows = []
    for rule, steps in settings:
        scores, secs = timed(rule, steps)
        found = coarse(scores.float())
        rows.append({"setting": f"{rule}, {steps}", "error": relative_error(scores, ref), "seconds": secs,
                     "coarse set": len(found),
                     "coarse-set Jaccard with exact": len(found & exact_set) / max(1, len(found | exact_set))})
    return pd.DataFrame(rows)
