"""What a dataset run does, as one frozen value: `RunSettings`.

The common part (the phases, the facts' language, how neurons are scored, the seed) plus one settings
value per phase of the run (each phase's own frozen dataclass, `kn.runs.phases`). config.json records
`RunSettings.asdict()`; `RunSettings.from_dict` rebuilds the value from it (any format).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from .. import checks
from ..settings import IG, KINDS as ATTRIBUTIONS, Settings, from_dict as attribution_from_dict, names, resolve
from .phases import COMMON, PHASES, check_phases, owner_of
from .phases.setting import to_json

DEFAULT_PHASES = ("locate", "verify")
# keywords of `RunSettings.make` / `kn.run` that set the attribution value (the older call forms)
ATTRIBUTION_KEYWORDS = ("method", "steps", "rule", "baseline", "multiplier", "freeze_norm", "batch_size",
                        "screen", "head_dtype")


@dataclass(frozen=True)
class RunSettings:
    """Settings of `kn.run` (Dai et al. 2022, sections 3-4; algorithms.md section 1).

    phases: the run's units of work, in order (`kn.runs.phases.PHASES`); languages: the languages
    the facts are run in (each (fact, language) a unit of work; `language=` sets one); attribution:
    how neurons are scored, `kn.IG(...)`, `kn.Activation()`, `kn.GradXAct()` or `kn.LogProbIncrease()`; seed: every seeded choice (controls);
    per_phase: ((phase name, its settings value), ...), one per phase of `phases` (missing ones take
    their defaults). A phase's setting reads as an attribute too (`settings.share`).
    """

    phases: tuple[str, ...] = DEFAULT_PHASES
    languages: tuple[str, ...] = ("en",)
    attribution: Settings = IG()
    seed: int = 0
    per_phase: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _set = object.__setattr__
        _set(self, "phases", tuple(checks.names(self.phases, "phases")))
        check_phases(self.phases)
        if not isinstance(self.attribution, tuple(ATTRIBUTIONS.values())):
            raise TypeError(f"attribution must be {names()}, got {self.attribution!r}")
        _set(self, "languages", check_languages(self.languages))
        checks.integer(self.seed, "seed")
        given = dict(self.per_phase)
        for name, value in given.items():
            if name in PHASES and not isinstance(value, PHASES[name].Settings):
                raise TypeError(f"the settings of phase {name!r} must be a {PHASES[name].Settings.__name__}, "
                                f"got {value!r}")
        _set(self, "per_phase", tuple((n, given.get(n) or PHASES[n].Settings()) for n in self.phases))
        for n in self.phases:  # bounds over several settings (a phase's costs), checked here, once
            getattr(PHASES[n], "check_run", lambda settings: None)(self)

    def of(self, phase: str):
        """The settings value of one of the run's phases."""
        for name, value in self.per_phase:
            if name == phase:
                return value
        raise KeyError(f"phase {phase!r} is not one of this run's phases {list(self.phases)}")

    def __getattr__(self, name: str):
        for _, value in self.__dict__.get("per_phase", ()):
            if name in {f.name for f in dataclasses.fields(value)}:
                return getattr(value, name)
        raise AttributeError(f"RunSettings has no setting {name!r} (phases {list(self.__dict__.get('phases', ()))})")

    @property
    def language(self) -> str:
        """The run's first language (the only one of a one-language run)."""
        return self.languages[0]

    @property
    def coarse_threshold(self) -> float:
        """The coarse filter t the run uses: the locate phase's threshold, else the attribution's."""
        t = self.of("locate").threshold if "locate" in self.phases else None
        return self.attribution.coarse_threshold if t is None else t

    def common(self) -> dict:
        """The common part every phase's records depend on (JSON-safe; `phases` aside)."""
        return {"languages": list(self.languages), "attribution": self.attribution.to_dict(), "seed": self.seed}

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def make(cls, settings: RunSettings | None = None, **changes: Any) -> RunSettings:
        """`settings` (default: the defaults) with `changes`, checked once. A change is a common
        setting, a phase's setting by its field name (`share=0.5`, `dkn_candidates=40`), or one of
        the attribution keywords: `method` ("ig" | "activation"), `steps`, `rule`, `baseline`,
        `multiplier`, `freeze_norm`, `batch_size` (`kn.locate`'s too), `screen`, `head_dtype` (`kn.IG`'s fields)."""
        if settings is not None and not isinstance(settings, cls):
            raise TypeError(f"settings must be a kn.RunSettings, got {type(settings).__name__}")
        base = settings or cls()
        short = {k: changes.pop(k) for k in ATTRIBUTION_KEYWORDS if k in changes}
        if "language" in changes:
            if "languages" in changes:
                raise checks.ArgumentError("pass language= (one) or languages= (several), not both")
            changes["languages"] = (changes.pop("language"),)
        unknown = sorted(k for k in changes if k not in COMMON and owner_of(k) is None)
        if unknown:
            raise TypeError(f"unknown run setting(s) {unknown}; the settings are {field_names()} "
                            f"(and {list(ATTRIBUTION_KEYWORDS)} for the attribution)")
        common = {k: changes.pop(k) for k in COMMON if k in changes}
        if short:
            if "attribution" in common:
                raise TypeError(f"pass attribution= or its keywords {sorted(short)}, not both")
            method = short.pop("method", None)
            common["attribution"] = resolve(None if method else base.attribution, method=method, **short)
        phases = common.get("phases", base.phases)
        phases = tuple(checks.names(phases, "phases"))
        by_phase: dict[str, dict] = {}
        for k, v in changes.items():
            by_phase.setdefault(owner_of(k).name, {})[k] = v
        stray = {n: sorted(kw) for n, kw in by_phase.items() if n not in phases}
        if stray:
            n, kw = next(iter(stray.items()))
            raise checks.ArgumentError(f"{', '.join(kw)} belong(s) to phase {n!r}, which this run does not do "
                                       f"(phases={list(phases)}); add it to phases or leave the setting out")
        old = dict(base.per_phase)
        per_phase = []
        for n in phases:
            value = old.get(n) if n in PHASES and isinstance(old.get(n), PHASES[n].Settings) else None
            value = value or (PHASES[n].Settings() if n in PHASES else None)
            if n in by_phase:
                value = dataclasses.replace(value, **by_phase[n])
            per_phase.append((n, value))
        return dataclasses.replace(base, **common, per_phase=tuple(p for p in per_phase if p[1] is not None))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSettings:
        """The value `asdict()` recorded (config.json's "settings"): {common..., phase: {its settings}};
        the flat form of kn before per-phase settings (format 2) is read too."""
        d = dict(d)
        if isinstance(d.get("attribution"), Mapping):
            d["attribution"] = attribution_from_dict(d["attribution"])
        if "language" in d:  # runs of one language before kn ran several in one run
            d["languages"] = [d.pop("language")]
        common = {k: d.pop(k) for k in COMMON if k in d}
        phases = tuple(common.get("phases", DEFAULT_PHASES))
        common["phases"] = phases
        for n in phases:
            if n not in PHASES:
                raise ValueError(f"unknown phase {n!r} in the recorded settings (written by a newer kn?); this kn "
                                 f"knows {list(PHASES)}")
        nested = {n: d.pop(n) for n in list(d) if n in PHASES and isinstance(d[n], Mapping)}
        flat = {}
        for k in list(d):  # format 2: every phase's fields at the top, whatever the run's phases
            owner = owner_of(k)
            if owner is None:
                raise ValueError(f"unknown run setting {k!r} (written by a newer kn?); this kn knows {field_names()}")
            if owner.name in phases:
                flat.setdefault(owner.name, {})[k] = d.pop(k)
            else:
                d.pop(k)
        per_phase = []
        for n in phases:
            retired = getattr(PHASES[n].Settings, "retired", ())  # settings a phase no longer has: dropped
            fields = {k: v for k, v in {**flat.get(n, {}), **nested.get(n, {})}.items() if k not in retired}
            names = {f.name: f for f in dataclasses.fields(PHASES[n].Settings)}
            extra = sorted(set(fields) - set(names))
            if extra:
                raise ValueError(f"unknown setting(s) {extra} of phase {n!r} (written by a newer kn?); this kn "
                                 f"knows {sorted(names)}")
            per_phase.append((n, PHASES[n].Settings(**{k: tuple(v) if isinstance(v, list) else v
                                                       for k, v in fields.items()})))
        return cls(**common, per_phase=tuple(per_phase))

    @classmethod
    def from_format1(cls, d: Mapping[str, Any]) -> RunSettings:
        """The settings of a config.json written before kn.runs (format 1: `method` and `steps` for the
        attribution, kn's IG defaults otherwise, two phases)."""
        d = dict(d)
        method, steps = d.pop("method"), d.pop("steps", None)
        d["attribution"] = IG(steps=steps) if method == "ig" else resolve(method=method)
        return cls.from_dict({k: v for k, v in d.items() if k in field_names() or k == "language"})

    def asdict(self) -> dict:
        """JSON-safe: config.json's "settings", {common..., phase: {its settings as the run uses them}}."""
        out = {"phases": list(self.phases), **self.common()}
        for name, value in self.per_phase:
            out[name] = to_json(PHASES[name].resolved(value, self))
        return out


def check_languages(languages) -> tuple[str, ...]:
    """Language codes: non-empty strings ("en,zh" splits), no repeats (any code the data has)."""
    langs = checks.names(languages, "languages")
    if len(set(langs)) != len(langs):
        raise checks.ArgumentError(f"languages repeats a code: {langs}")
    return tuple(langs)


def field_names() -> list[str]:
    """Every setting `RunSettings.make` takes by name: the common ones, then each phase's."""
    return [*COMMON, *(f.name for p in PHASES.values() for f in dataclasses.fields(p.Settings))]
