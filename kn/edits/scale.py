"""`scale`: the fact's knowledge neurons' activations multiplied by a factor (x0 erases, x2 enhances:
Dai et al. 4.2, Chen et al.'s cross-lingual editing, EleutherAI's package). No weight changes; the
hooks are removed on exit. It does not aim at the new object: it is the suppression the field
reports as an "edit", measured on the same footing."""
from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..interventions import SUPPRESS_FACTOR, scaled
from .base import Method


@dataclass(frozen=True)
class Scale(Method):
    """factor: what the neurons' activations are multiplied by; positions: "answer" or "all"."""

    name = "scale"
    needs = ("neurons",)
    factor: float = SUPPRESS_FACTOR
    positions: str = "answer"

    def __post_init__(self):
        checks.number(self.factor, "factor")
        if self.positions not in ("answer", "all"):
            raise checks.ArgumentError(f"positions must be 'answer' or 'all', got {self.positions!r}")

    def touched(self, lm, requests):
        return len({x for r in requests for x in r.neurons}), 0  # activations scaled, no weight written

    def apply(self, lm, requests):
        union = list(dict.fromkeys(n for r in requests for n in r.neurons))
        return scaled(lm, union, self.factor, self.positions)
