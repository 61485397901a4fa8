"""`ft`: fine-tuning one FFN output matrix under an L-infinity norm constraint (FT-L; Zhu et al. 2020
as ROME's baseline `baselines/ft`): Adam on the teacher-forced NLL of every request's new object at
its prompts (EasyEdit's FT-M loss), the change clamped to [-eps, eps] after every step. Only the
matrix's weight is trained (ROME's also trains the bias)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .. import checks
from ..hooks import frozen_params, hooked
from .base import Method, batch_losses, restored, slot_rows_hook


@dataclass(frozen=True)
class FT(Method):
    """layer: the FFN whose output matrix is trained (None: the top third's first, round(n_layers / 3));
    eps: the bound on each weight's change; lr, steps: Adam's; stops when the mean loss < stop_loss."""

    name = "ft"
    writes_slots = True
    layer: int | None = None
    eps: float = 5e-3
    lr: float = 5e-3
    steps: int = 25
    stop_loss: float = 1e-2

    def __post_init__(self):
        if self.layer is not None:
            checks.integer(self.layer, "layer", low=0)
        checks.number(self.eps, "eps", low=0.0), checks.number(self.lr, "lr", low=0.0)
        checks.integer(self.steps, "steps", low=0), checks.number(self.stop_loss, "stop_loss", low=0.0)

    def layer_of(self, lm) -> int:
        layer = round(lm.n_layers / 3) if self.layer is None else self.layer
        return checks.integer(layer, "layer", high=lm.n_layers - 1)

    def touched(self, lm, requests):
        return 0, lm.value_slots(self.layer_of(lm)).numel()

    def chosen(self, lm, requests):
        return [{"layer": self.layer_of(lm)} for _ in requests]

    @contextmanager
    def apply(self, lm, requests):
        layer = self.layer_of(lm)
        slots = lm.value_slots(layer)
        delta = torch.zeros(slots.shape, dtype=torch.float32, device=slots.device, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=self.lr)
        pairs = [(p, r.new) for r in requests for p in r.prompts]
        with frozen_params(lm.model), torch.enable_grad(), hooked([slot_rows_hook(lm, layer, None, delta)]):
            for _ in range(self.steps):
                loss = batch_losses(lm, pairs)[0].mean()
                if loss.item() < self.stop_loss:
                    break
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    delta.clamp_(-self.eps, self.eps)
        with restored([slots]):
            with torch.no_grad():
                slots.add_(delta.detach().to(slots.dtype))
            yield
