"""`scale`: the fact's knowledge neurons' activations multiplied by a factor (x0 erases, x2 enhances:
Dai et al. 4.2, Chen et al.'s cross-lingual editing, EleutherAI's package). No weight changes; the
hooks are removed on exit. It does not aim at the new object: it is the suppression the field
reports as an "edit", measured on the same footing."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import checks
from ..interventions import SUPPRESS_FACTOR, check_neurons, scaled
from .base import Method
from .rows import Row


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

    def as_row(self, lm, requests):
        """Activation a x factor at a neuron adds (factor - 1) a v to the FFN output (v its value slot): the
        same change as its slot made factor x v, at the positions scaled (a causal LM's: None for a masked
        LM, whose answer positions are its [MASK] tokens)."""
        if lm.masked:
            return None
        union = list(dict.fromkeys(n for r in requests for n in r.neurons))
        with torch.no_grad():
            changes = {l: (torch.tensor(ix), (self.factor - 1) * lm.value_slots(l)[ix].clone())
                       for l, ix in check_neurons(lm, union).items()}
        return Row(changes, answer_only=self.positions == "answer")
