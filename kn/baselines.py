"""IG baselines: where the path starts, per answer token, for every layer at once.

A named baseline is one entry of `BASELINES`: a function (lm, target) -> [n_layers, width] (the
baseline site vector of each layer at the target's answer-predicting position). A `kn.AMIG(...)`
value (its options) or an explicit tensor [n_layers, width] is accepted wherever a name is. Dai et
al. use the zero vector; Chen et al. AMIG ("amig"; "amig-all" corrupts every position, as their
code does).
"""
from __future__ import annotations

from typing import Callable

import torch

from .amig import AMIG
from .models import LM
from .tokens import Target

Baseline = Callable[[LM, Target], torch.Tensor]


def zero(lm: LM, target: Target) -> torch.Tensor:
    """The zero vector at every layer (Dai et al. 2022), [n_layers, width]."""
    return torch.zeros(lm.n_layers, lm.width, device=lm.device)


BASELINES: dict[str, Baseline] = {"zero": zero, "amig": AMIG(), "amig-all": AMIG(positions="all")}
Spec = str | AMIG | torch.Tensor


def check(baseline) -> Spec:
    """A baseline spec as kn keeps it: a name of `BASELINES`, an `AMIG` or a 2-D tensor (None = "zero")."""
    if baseline is None:
        return "zero"
    if isinstance(baseline, AMIG):
        return baseline
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; choose one of {list(BASELINES)} "
                             "or pass a tensor [n_layers, width]")
        return baseline
    if isinstance(baseline, torch.Tensor):
        if baseline.dim() != 2 or not baseline.is_floating_point():
            raise ValueError(f"a baseline tensor must be a float tensor [n_layers, width], got "
                             f"{baseline.dtype} {list(baseline.shape)}")
        _finite(baseline, "baseline")
        return baseline
    raise TypeError(f"baseline must be a name ({list(BASELINES)}), kn.AMIG(...) or a tensor [n_layers, width], "
                    f"got {type(baseline).__name__}")


def _finite(t: torch.Tensor, what: str) -> None:
    bad = ~torch.isfinite(t.detach())
    if bad.any():
        at = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{what} holds {int(bad.sum())} non-finite value(s) (first at [layer, index] {list(at)}: "
                         f"{t[at].item()}); pass finite numbers")


def check_shape(lm: LM, baseline: torch.Tensor, what: str = "baseline") -> None:
    if tuple(baseline.shape) != (lm.n_layers, lm.width):
        raise ValueError(f"{what} must have shape [{lm.n_layers}, {lm.width}], got {list(baseline.shape)}")


def check_for(lm: LM, baseline: Spec) -> None:
    """What only the model can tell: a tensor's shape, AMIG's corruption token."""
    if isinstance(baseline, torch.Tensor):
        check_shape(lm, baseline)
    elif isinstance(b := BASELINES.get(baseline, baseline), AMIG):
        b.corruption_id(lm)


def resolve(lm: LM, target: Target, baseline: Spec) -> torch.Tensor:
    """The baseline [n_layers, width] of one answer token (a checked spec; see `check`)."""
    if isinstance(baseline, torch.Tensor):
        return baseline
    fn = BASELINES[baseline] if isinstance(baseline, str) else baseline
    out = fn(lm, target)
    check_shape(lm, out, f"baseline {baseline!r}")
    _finite(out, f"baseline {baseline!r} of this prompt")
    return out


def to_json(baseline: Spec):
    """A JSON-safe form: a name, {"amig": {...}}, or {"tensor": nested lists, "dtype": ...}."""
    if isinstance(baseline, AMIG):
        return baseline.to_dict()
    if isinstance(baseline, torch.Tensor):
        b = baseline.detach().cpu()
        return {"tensor": b.tolist(), "dtype": str(b.dtype).removeprefix("torch.")}
    return baseline


def from_json(d) -> Spec:
    """The spec `to_json` wrote."""
    if isinstance(d, dict) and "amig" in d:
        return AMIG(**d["amig"])
    if isinstance(d, dict):
        return torch.tensor(d["tensor"], dtype=getattr(torch, d.get("dtype", "float32")))
    return d
