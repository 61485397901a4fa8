"""What a dataset run does, as one frozen value: `RunSettings`.

Every value a run's code reads comes from here, and nowhere else are its defaults written: config.json
records `RunSettings.asdict()` and a resume compares it field by field, so no setting can change
without the run noticing. `RunSettings.from_dict` rebuilds the value from config.json.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping

from ..settings import IG, Activation, Settings, from_dict as attribution_from_dict, resolve

DEFAULT_PHASES = ("locate", "verify")
# keywords of `RunSettings.make` / `kn.run` that set the attribution value (the older call forms)
ATTRIBUTION_KEYWORDS = ("method", "steps", "rule", "baseline", "multiplier", "freeze_norm", "batch_size")


@dataclass(frozen=True)
class RunSettings:
    """Settings of `kn.run` (Dai et al. 2022, sections 3-4; algorithms.md section 1).

    phases: the run's units of work, in order (`kn.runs.phases.PHASES`); language: the facts'
    language; attribution: how neurons are scored, `kn.IG(...)` or `kn.Activation()`; threshold:
    the coarse filter t (None: the attribution's, 0.2 IG / 0.5 activation, recorded as such in
    config.json; `coarse_threshold` is the one used); share: the refinement share p the per-relation
    tuning starts from; min_prompts: the refinement floor; kns_per_fact: the (low, high) mean
    knowledge neurons per fact the tuning aims for, moving the share by share_step for at most
    share_tries evaluations; relation_neuron_share: a relation-level neuron is a knowledge neuron of
    at least this share of the relation's located facts; controls: also verify on a random fact of
    another relation and of the same relation (chosen by seed); suppress_factor / amplify_factor:
    what verification multiplies the neurons by; dkn_candidates, dkn_single, dkn_pair, dkn_share: the
    "degenerate" phase's candidates per prompt (its top neurons by the attribution), the pair rule's
    two fractions (each alone keeps >= (1 - single) P0, both drop below (1 - pair) P0; Chen et al.
    2024) and the share of a fact's prompts a pair must hold on to be the fact's.
    """

    phases: tuple[str, ...] = DEFAULT_PHASES
    language: str = "en"
    attribution: Settings = IG()
    threshold: float | None = None
    share: float = 0.7
    min_prompts: int = 3
    kns_per_fact: tuple[float, float] = (2, 5)
    share_step: float = 0.05
    share_tries: int = 6
    relation_neuron_share: float = 0.1
    controls: bool = True
    seed: int = 0
    suppress_factor: float = 0.0
    amplify_factor: float = 2.0
    dkn_candidates: int = 20
    dkn_single: float = 0.2
    dkn_pair: float = 0.25
    dkn_share: float = 0.5

    def __post_init__(self) -> None:
        _set = object.__setattr__
        _set(self, "phases", tuple(self.phases) if not isinstance(self.phases, str) else (self.phases,))
        _set(self, "kns_per_fact", tuple(self.kns_per_fact))
        if not isinstance(self.attribution, (IG, Activation)):
            raise TypeError(f"attribution must be kn.IG(...) or kn.Activation(), got {self.attribution!r}")
        if self.threshold is not None:
            _set(self, "threshold", _number("threshold", self.threshold))
        _check(self)

    @property
    def coarse_threshold(self) -> float:
        """The coarse filter t the run uses: `threshold`, or the attribution's (0.2 IG, 0.5 activation)."""
        return self.attribution.coarse_threshold if self.threshold is None else self.threshold

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def make(cls, settings: RunSettings | None = None, **changes: Any) -> RunSettings:
        """`settings` (default: the defaults) with `changes` to its fields, checked once. The
        attribution may also be given by the keywords of `kn.locate`: `method` ("ig" |
        "activation"), `steps`, `rule`, `baseline`, `multiplier`, `freeze_norm`, `batch_size`."""
        if settings is not None and not isinstance(settings, cls):
            raise TypeError(f"settings must be a kn.RunSettings, got {type(settings).__name__}")
        base = settings or cls()
        short = {k: changes.pop(k) for k in ATTRIBUTION_KEYWORDS if k in changes}
        unknown = set(changes) - set(field_names())
        if unknown:
            raise TypeError(f"unknown run setting(s) {sorted(unknown)}; the settings are {field_names()} "
                            f"(and {list(ATTRIBUTION_KEYWORDS)} for the attribution)")
        if short:
            if "attribution" in changes:
                raise TypeError(f"pass attribution= or its keywords {sorted(short)}, not both")
            method = short.pop("method", None)
            changes["attribution"] = resolve(None if method else base.attribution, method=method, **short)
        return dataclasses.replace(base, **changes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSettings:
        """The value `asdict()` recorded (config.json's "settings")."""
        unknown = set(d) - set(field_names())
        if unknown:
            raise ValueError(f"unknown run setting(s) {sorted(unknown)} (written by a newer kn?); "
                             f"this kn knows {field_names()}")
        d = dict(d)
        if isinstance(d.get("attribution"), Mapping):
            d["attribution"] = attribution_from_dict(d["attribution"])
        return cls(**d)

    @classmethod
    def from_format1(cls, d: Mapping[str, Any]) -> RunSettings:
        """The settings of a config.json written before kn.runs (format 1: `method` and `steps` for the
        attribution, kn's IG defaults otherwise, two phases)."""
        d = dict(d)
        method, steps = d.pop("method"), d.pop("steps", None)
        d["attribution"] = IG(steps=steps) if method == "ig" else resolve(method=method)
        return cls.from_dict({k: v for k, v in d.items() if k in field_names()})

    def asdict(self) -> dict:
        """JSON-safe: config.json's "settings", with the threshold the run uses (not None)."""
        d = {f.name: _json(getattr(self, f.name)) for f in fields(self)}
        return d | {"threshold": self.coarse_threshold}


def field_names() -> list[str]:
    return [f.name for f in fields(RunSettings)]


def _json(v: Any) -> Any:
    if isinstance(v, (IG, Activation)):
        return v.to_dict()
    return list(v) if isinstance(v, tuple) else v


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {v!r}")
    return float(v)


def _check(s: RunSettings) -> None:
    """Clear errors, each naming the setting and what it accepts."""
    from .phases import check_phases

    check_phases(s.phases)
    if not isinstance(s.language, str) or not s.language:
        raise ValueError(f"language must be a language code such as 'en', got {s.language!r}")
    _int_at_least("min_prompts", s.min_prompts, 1)
    _int_at_least("share_tries", s.share_tries, 1)
    _int_at_least("seed", s.seed, None)
    _int_at_least("dkn_candidates", s.dkn_candidates, 2)
    for name, v in (("threshold", s.coarse_threshold), ("share", s.share), ("dkn_single", s.dkn_single),
                    ("dkn_pair", s.dkn_pair), ("dkn_share", s.dkn_share)):
        if not 0 <= _number(name, v) <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {v!r}")
    if not 0 < _number("relation_neuron_share", s.relation_neuron_share) <= 1:
        raise ValueError(f"relation_neuron_share must be in (0, 1], got {s.relation_neuron_share!r}")
    if not 0 < _number("share_step", s.share_step) < 1:
        raise ValueError(f"share_step must be in (0, 1), got {s.share_step!r}")
    if len(s.kns_per_fact) != 2 or not 0 <= _number("kns_per_fact", s.kns_per_fact[0]) <= _number(
            "kns_per_fact", s.kns_per_fact[1]):
        raise ValueError(f"kns_per_fact must be (low, high) with 0 <= low <= high, got {s.kns_per_fact!r}")
    _number("suppress_factor", s.suppress_factor)
    _number("amplify_factor", s.amplify_factor)
    if not isinstance(s.controls, bool):
        raise TypeError(f"controls must be True or False, got {s.controls!r}")


def _int_at_least(name: str, v: Any, low: int | None) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low):
        raise ValueError(f"{name} must be an int" + (f" >= {low}" if low is not None else "") + f", got {v!r}")
