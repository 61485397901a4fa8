"""`dai`: the paper's value-slot update (Dai et al. 2022, 5.1; `kn.editing.update_fact`), each
request through its own knowledge neurons."""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from .. import checks
from ..editing import LAMBDA1, LAMBDA2, update_fact
from .base import Method


@dataclass(frozen=True)
class Dai(Method):
    """v_i <- v_i - lambda1 |v_i|/|e_old| e_old + lambda2 |v_i|/|e_new| e_new on each request's neurons."""

    name = "dai"
    writes_slots = True
    needs = ("neurons",)
    lambda1: float = LAMBDA1
    lambda2: float = LAMBDA2

    def __post_init__(self):
        checks.number(self.lambda1, "lambda1", low=0.0), checks.number(self.lambda2, "lambda2", low=0.0)

    def touched(self, lm, requests):
        n = len({x for r in requests for x in r.neurons})
        return n, n * lm.value_slots(0).shape[1]

    @contextmanager
    def apply(self, lm, requests):
        with ExitStack() as stack:  # nested: each update restores its layers' slots, in reverse order
            for r in requests:
                stack.enter_context(update_fact(lm, r.neurons, r.prompt, r.old, r.new, lambda1=self.lambda1,
                                                lambda2=self.lambda2))
            yield
