"""How neurons are scored, as one frozen value: `IG(...)`, `Activation()`, `GradXAct()` or a kind registered
later (`kn.LogProbIncrease()`, `register`).

A value goes to `kn.attribute` (IG), `kn.locate` and `kn.localization.prompt_sets`; each knows its default
coarse-filter threshold (Dai et al.: 0.2 for IG, 0.5 for raw activation). `dataclasses.asdict(v)`
or `v.to_dict()` (JSON-safe) records it by value, and `from_dict(d)` rebuilds it:

    >>> ig = IG(steps=20, rule="gauss_legendre")
    >>> from_dict(ig.to_dict()) == ig
    True
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Union

import torch

from . import baselines
from .quadrature import Quadrature, quadrature

MULTIPLIERS = ("x-b", "x")
HEAD_DTYPES = ("float32", "bfloat16")  # kn.ig.head.GRADS' keys
LATER = ("screen", "head_dtype")  # IG fields added after runs were recorded: written only when not the default


@dataclass(frozen=True, eq=False)
class IG:
    """Integrated gradients over the neuron site (Dai et al. 2022, eq. 3-4).

    steps: m path points; rule: a quadrature rule of `kn.RULES` ("riemann_left", the paper's;
    "linspace", EleutherAI's; "riemann_trapezoid"; "gauss_legendre"); baseline: a name of
    `kn.baselines.BASELINES` ("zero", Dai et al.'s; "amig", Chen et al.'s; "amig-all"), a `kn.AMIG(...)`
    or a tensor [n_layers, width]; multiplier: what the integrated gradient is multiplied by, "x-b"
    (the definition) or "x" (the AMIG reference code's); freeze_norm: hold post-FFN norm scales at
    their clean values along the path (families with such a norm); batch_size: path rows per forward
    pass (None: sized to memory; changes speed, not scores); screen: IG only on the `screen` layers where
    gradient x activation (`kn.GradXAct`, one forward and backward) peaks, zero rows elsewhere
    (`kn.screening`; None: every layer given); head_dtype: the dtype of the output layer's products in
    the fast path's gradient (`kn.ig.head.GRADS`): "float32" (exact logits) or "bfloat16" (about 2e-3 of the
    largest gradient, a bfloat16 rounding's size; twice as fast on CPUs with AVX512-BF16).
    """

    steps: int = 20
    rule: str = "riemann_left"
    baseline: baselines.Spec = "zero"
    multiplier: str = "x-b"
    freeze_norm: bool = True
    batch_size: int | None = None
    screen: int | None = None
    head_dtype: str = "float32"
    kind: str = field(default="ig", init=False, repr=False)
    coarse_threshold: ClassVar[float] = 0.2

    def __post_init__(self):
        quadrature(self.rule, self.steps)  # validates rule and steps
        object.__setattr__(self, "baseline", baselines.check(self.baseline))
        if self.multiplier not in MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {MULTIPLIERS}, got {self.multiplier!r}")
        if not isinstance(self.freeze_norm, bool):
            raise TypeError(f"freeze_norm must be True or False, got {self.freeze_norm!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool)
                                            or self.batch_size < 1):
            raise ValueError(f"batch_size must be None or an int >= 1, got {self.batch_size!r}")
        if self.screen is not None and (not isinstance(self.screen, int) or isinstance(self.screen, bool)
                                        or self.screen < 1):
            raise ValueError(f"screen must be None (every layer) or an int >= 1 (how many candidate layers IG "
                             f"runs on), got {self.screen!r}")
        if self.head_dtype not in HEAD_DTYPES:
            raise ValueError(f"head_dtype must be one of {HEAD_DTYPES}, got {self.head_dtype!r}")

    def factor(self, x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """What the integrated gradient is multiplied by (float32): x - b, or x (multiplier "x")."""
        return x.float() - base.float() if self.multiplier == "x-b" else x.float()

    def quadrature(self) -> Quadrature:
        """Points and weights [steps] of the rule (float64)."""
        return quadrature(self.rule, self.steps)

    def to_dict(self) -> dict:
        """A JSON-safe dict (the baseline as `kn.baselines.to_json` writes it); `screen` and `head_dtype` only
        when not their defaults, so that what runs recorded before they existed reads the same."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if not (f.name in LATER and getattr(self, f.name) == f.default)}
        return d | {"baseline": baselines.to_json(self.baseline)}

    def _key(self) -> tuple:
        b = self.baseline
        b = ("tensor", tuple(b.shape), str(b.dtype)) if isinstance(b, torch.Tensor) else b
        return self.steps, self.rule, b, self.multiplier, self.freeze_norm, self.batch_size, self.screen, self.head_dtype

    def __eq__(self, other) -> bool:  # by value, tensor baselines included
        if not isinstance(other, IG):
            return NotImplemented
        if self._key() != other._key():
            return False
        a, b = self.baseline, other.baseline
        return not isinstance(a, torch.Tensor) or a is b or torch.equal(a.cpu(), b.cpu())

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(frozen=True)
class Activation:
    """The activation baseline of Dai et al.: the score is the raw site activation."""

    kind: str = field(default="activation", init=False, repr=False)
    coarse_threshold: ClassVar[float] = 0.5

    def to_dict(self) -> dict:
        return {"kind": self.kind}


@dataclass(frozen=True)
class GradXAct:
    """Gradient x activation: the score is x * dP(gold)/dx at the clean activations, every layer from
    one forward and one backward pass (`kn.gradxact`): IG's first-order, one-point shortcut."""

    kind: str = field(default="gradxact", init=False, repr=False)
    coarse_threshold: ClassVar[float] = 0.2

    def to_dict(self) -> dict:
        return {"kind": self.kind}


Settings = Union[IG, Activation, GradXAct]  # and any kind registered later (kn.LogProbIncrease)
KINDS: dict[str, type] = {"ig": IG, "activation": Activation, "gradxact": GradXAct}


def register(cls: type) -> type:
    """Add a settings class (a frozen dataclass with a `kind` default, `coarse_threshold` and `to_dict`) to
    `KINDS`; `kn.attribution.register` calls it with the class's scoring function."""
    kind = cls.__dataclass_fields__["kind"].default
    if KINDS.get(kind, cls) is not cls:
        raise ValueError(f"settings kind {kind!r} is taken by {KINDS[kind].__name__}")
    KINDS[kind] = cls
    return cls


def names() -> str:
    """The settings values as people write them: "kn.IG(...), kn.Activation(), ... or kn.X()"."""
    forms = [f"kn.{c.__name__}({'...' if c is IG else ''})" for c in KINDS.values()]
    return ", ".join(forms[:-1]) + " or " + forms[-1]


def from_dict(d: dict) -> Settings:
    """The value that `to_dict()` or `dataclasses.asdict()` recorded."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"settings need 'kind' one of {list(KINDS)}, got {kind!r}")
    if "baseline" in d:
        d["baseline"] = baselines.from_json(d["baseline"])
    names = {f.name for f in dataclasses.fields(KINDS[kind]) if f.init}
    if set(d) - names:
        raise ValueError(f"unknown {kind} settings {sorted(set(d) - names)}; known: {sorted(names)}")
    return KINDS[kind](**d)


def resolve(settings: Settings | None = None, *, method: str | None = None, **overrides) -> Settings:
    """One settings value from the forms people write: a value, or keywords (`None` = not given)
    overriding its fields (default `IG()`); `method` (a name of `KINDS`: "ig", "activation", "gradxact",
    "logprob") is the string form.
    """
    if method is not None:
        if method not in KINDS:
            raise ValueError(f"method must be one of {list(KINDS)}, got {method!r}")
        if settings is not None:
            raise TypeError(f"pass either settings ({names()}) or method=, not both")
        settings = KINDS[method]()
    settings = IG() if settings is None else settings
    if not isinstance(settings, tuple(KINDS.values())):
        raise TypeError(f"settings must be {names()}, got {type(settings).__name__}"
                        + (" (rebuild a dict with kn.settings.from_dict)" if isinstance(settings, dict) else ""))
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides and not isinstance(settings, IG):
        raise TypeError(f"{sorted(overrides)} apply to integrated gradients, not to method {settings.kind!r}")
    return dataclasses.replace(settings, **overrides) if overrides else settings
