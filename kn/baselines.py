"""IG baselines: where the path starts, per answer token, for every layer at once.

A named baseline is one entry of `BASELINES`: a function (lm, target) -> [n_layers, width] (the
baseline site vector of each layer at the target's answer-predicting position). An explicit tensor
[n_layers, width] is accepted wherever a name is. Dai et al. use the zero vector.
"""
from __future__ import annotations

from typing import Callable

import torch

from .models import LM
from .tokens import Target

Baseline = Callable[[LM, Target], torch.Tensor]


def zero(lm: LM, target: Target) -> torch.Tensor:
    """The zero vector at every layer (Dai et al. 2022), [n_layers, width]."""
    return torch.zeros(lm.n_layers, lm.width, device=lm.device)


BASELINES: dict[str, Baseline] = {"zero": zero}


def check(baseline) -> str | torch.Tensor:
    """A baseline spec as kn keeps it: a name of `BASELINES` or a 2-D tensor (None = "zero")."""
    if baseline is None:
        return "zero"
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; choose one of {list(BASELINES)} "
                             "or pass a tensor [n_layers, width]")
        return baseline
    if isinstance(baseline, torch.Tensor):
        if baseline.dim() != 2 or not baseline.is_floating_point():
            raise ValueError(f"a baseline tensor must be a float tensor [n_layers, width], got "
                             f"{baseline.dtype} {list(baseline.shape)}")
        return baseline
    raise TypeError(f"baseline must be a name ({list(BASELINES)}) or a tensor [n_layers, width], "
                    f"got {type(baseline).__name__}")


def check_shape(lm: LM, baseline: torch.Tensor, what: str = "baseline") -> None:
    if tuple(baseline.shape) != (lm.n_layers, lm.width):
        raise ValueError(f"{what} must have shape [{lm.n_layers}, {lm.width}], got {list(baseline.shape)}")


def resolve(lm: LM, target: Target, baseline: str | torch.Tensor) -> torch.Tensor:
    """The baseline [n_layers, width] of one answer token (a checked spec; see `check`)."""
    if isinstance(baseline, str):
        out = BASELINES[baseline](lm, target)
        check_shape(lm, out, f"baseline {baseline!r}")
        return out
    return baseline
