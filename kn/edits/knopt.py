"""`kn-opt`: optimise only the value slots of the fact's located knowledge neurons (at most
`max_neurons`, in the order given: `kn.locate`'s) so that the new object is the answer on the
request's prompts, with a KL term keeping the next-token distributions of its `keep` prompts
(unrelated facts), Adam, and a stopping rule: stop once P(new) >= `stop_prob` on every prompt (or after
`steps`). Several requests are optimised jointly, each through its own neurons (shared neurons are
one set of slots)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .. import checks
from ..hooks import frozen_params, hooked
from .base import Method, batch_losses, restored, slot_rows_hook


@dataclass(frozen=True)
class KNOpt(Method):
    """max_neurons: neurons written per request; steps, lr: Adam's; kl_weight: the KL term's weight;
    stop_prob: the stopping rule's bound on P(new) (first token) on every prompt."""

    name = "kn-opt"
    writes_slots = True
    needs = ("neurons",)
    max_neurons: int = 10
    steps: int = 60
    lr: float = 0.005  # 0.05 and 0.01 flipped every neighbour of gemma-3-270m's one CI-size edit; 0.005 kept 2 of 3
    kl_weight: float = 1.0
    stop_prob: float = 0.9

    def __post_init__(self):
        checks.integer(self.max_neurons, "max_neurons", low=1), checks.integer(self.steps, "steps", low=0)
        checks.number(self.lr, "lr", low=0.0), checks.number(self.kl_weight, "kl_weight", low=0.0)
        checks.number(self.stop_prob, "stop_prob", low=0.0, high=1.0)

    def neurons(self, requests) -> dict[int, list[int]]:
        """{layer: [index, ...]} written: each request's first `max_neurons` neurons, merged."""
        by_layer: dict[int, list[int]] = {}
        for r in requests:
            for l, i in list(dict.fromkeys(r.neurons))[: self.max_neurons]:
                if i not in by_layer.setdefault(l, []):
                    by_layer[l].append(i)
        return by_layer

    def touched(self, lm, requests):
        n = sum(len(ix) for ix in self.neurons(requests).values())
        return n, n * lm.value_slots(0).shape[1]

    @contextmanager
    def apply(self, lm, requests):
        by_layer = self.neurons(requests)
        index = {l: torch.tensor(ix) for l, ix in by_layer.items()}
        slots = {l: lm.value_slots(l) for l in by_layer}
        deltas = {l: torch.zeros(len(ix), slots[l].shape[1], requires_grad=True) for l, ix in by_layer.items()}
        opt = torch.optim.Adam(list(deltas.values()), lr=self.lr)
        pairs = [(p, r.new) for r in requests for p in r.prompts]
        keep = list(dict.fromkeys(p for r in requests for p in r.keep))
        with torch.no_grad():
            p0 = batch_losses(lm, [], keep)[2]
        hooks = [slot_rows_hook(lm, l, index[l], deltas[l]) for l in by_layer]
        with frozen_params(lm.model), torch.enable_grad(), hooked(hooks):
            for _ in range(self.steps):
                losses, first, qs = batch_losses(lm, pairs, keep if self.kl_weight else ())
                if all(x.item() <= -torch.log(torch.tensor(self.stop_prob)).item() for x in first):
                    break
                loss = losses.mean()
                if qs:
                    kls = [torch.sum(q0.exp() * (q0 - q)) for q, q0 in zip(qs, p0)]  # KL(P_0 || P_edit)
                    loss = loss + self.kl_weight * sum(kls) / len(kls)
                opt.zero_grad()
                loss.backward()
                opt.step()
        with restored(list(slots.values())):
            with torch.no_grad():
                for l, ix in index.items():
                    slots[l][ix] += deltas[l].detach().to(slots[l].dtype)
            yield
