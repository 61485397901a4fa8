"""What config.json records about a run, and how a resume compares two configs.

config.json = {"kind": "kn run", "format": 3, "kn_version", "settings": RunSettings.asdict() (the
common settings and one entry per phase), "model": lm.describe(), "data": {name, fingerprint,
n_facts, relations}, "created"}; a run whose phase settings changed on a resume also keeps
"history" (the settings it had before, with the date and kn version) and, for a journal written
before records carried keys, "legacy_keys".

On a resume the model, the data and the common settings must be the same (else the run is refused,
each difference named); the phases and their settings may change: records made under other
settings are ignored and recomputed (`kn.runs.phases.base`). The kn version is recorded, not
compared: a newer kn resumes a run whose records are still valid.

Format 1 (kn before kn.runs) had `method` and `steps` where format 2 has `attribution`; format 2
had every phase's settings in one flat dict. `upgrade` reads both as the format 3 config they
stand for, so such runs load and resume.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from ..data.schema import fingerprint as schema_fingerprint
from .phases import PHASES, make_phases, record_versions
from ..version import __version__
from .settings import RunSettings

FORMAT = 3
KIND = "kn run"
NOT_COMPARED = ("created", "format", "kn_version", "history", "legacy_keys", "sessions")


def make(lm, facts, selected: Sequence, settings: RunSettings) -> dict:
    """The config of a run of `settings` by `lm` over `selected` (of `facts`); "created" is added on write."""
    return {
        "kind": KIND,
        "format": FORMAT,
        "kn_version": __version__,
        "settings": settings.asdict(),
        "model": lm.describe(),
        "data": {"name": getattr(facts, "name", ""), "fingerprint": fingerprint(facts), "n_facts": len(selected),
                 "relations": list(dict.fromkeys(f.relation for f in selected))},
    }


def fingerprint(facts) -> str:
    """The data's fingerprint (`kn.data.schema.fingerprint`; a FactSet's own)."""
    return facts.fingerprint() if hasattr(facts, "fingerprint") else schema_fingerprint(facts)


def is_run_config(config: Any) -> bool:
    """Whether `config` (a parsed config.json) is a kn run's, of any format."""
    if not isinstance(config, dict):
        return False
    if config.get("kind") == KIND:
        return True
    return (config.get("format") == 1 and isinstance(config.get("settings"), dict)
            and "method" in config["settings"] and {"model", "data"} <= set(config))


def upgrade(config: dict) -> dict:
    """`config` in the current format (settings added since it was written take their defaults, what
    the run used)."""
    fmt = config.get("format")
    if fmt in (2, FORMAT):
        return {**config, "settings": RunSettings.from_dict(config["settings"]).asdict()}
    if fmt == 1:
        return {"kind": KIND, **config, "settings": RunSettings.from_format1(config["settings"]).asdict()}
    raise ValueError(f"config format {fmt!r} is not one this kn reads (1 to {FORMAT}): written by a newer kn?")


def settings_of(config: dict) -> RunSettings:
    """The RunSettings a config records (any format)."""
    return RunSettings.from_dict(upgrade(config)["settings"])


def languages_of(config: dict) -> list[str]:
    """The languages of the run a config records (any format, also an older kn's multilingual run's
    config, which lists them at its top)."""
    if "languages" in config:
        return list(config["languages"])
    return list(settings_of(config).languages)


def legacy_keys(config: dict) -> dict[str, str]:
    """{record type: key} for the journal's records that carry no key: written before kn keyed its
    records, under the settings of the config that run started with."""
    if "legacy_keys" in config:
        return dict(config["legacy_keys"])
    if config.get("format", FORMAT) < FORMAT:
        return record_versions(make_phases(settings_of(config)))
    return {}


def blocking_differences(new: dict, stored: dict) -> list[str]:
    """What keeps a run of config `new` from resuming the one `stored` records: model, data, common
    settings (one readable line each); the phases and their settings may differ."""
    old = upgrade(stored)
    s_new, s_old = new["settings"], old["settings"]
    phase_names = set(s_new.get("phases", [])) | set(s_old.get("phases", []))
    strip = lambda s: {k: v for k, v in s.items() if k != "phases" and k not in phase_names}  # noqa: E731
    return differences(comparable({**new, "settings": strip(s_new)}), comparable({**old, "settings": strip(s_old)}))


def phase_differences(new: dict, stored: dict) -> list[str]:
    """Where the phases and their settings differ (what a resume recomputes)."""
    s_new, s_old = new["settings"], upgrade(stored)["settings"]
    names = ["phases", *dict.fromkeys([*s_new.get("phases", []), *s_old.get("phases", [])])]
    return differences({k: s_new.get(k, "<absent>") for k in names}, {k: s_old.get(k, "<absent>") for k in names},
                       "settings")


def resumed(new: dict, stored: dict, when: str) -> dict:
    """The config.json a resume of `stored` with config `new` writes: `new`, created when `stored`
    was, with `stored`'s settings in its history when they differ."""
    out = {**new, "created": stored.get("created")}
    if "sessions" in stored:
        out["sessions"] = stored["sessions"]
    history = list(stored.get("history", []))
    if phase_differences(new, stored) or new.get("kn_version") != stored.get("kn_version"):
        history.append({"until": when, "kn_version": stored.get("kn_version"), "settings": stored["settings"]})
    if history:
        out["history"] = history
    legacy = legacy_keys(stored)
    if legacy:
        out["legacy_keys"] = legacy
    return out


def identity(config: dict) -> dict:
    """What names a run (its directory under `kn.runs.Keyed`, what a resume must keep): `comparable`
    without the phases and their settings, which may change within one run."""
    c = comparable(config)
    if isinstance(c.get("settings"), dict):
        c["settings"] = {k: v for k, v in c["settings"].items() if k != "phases" and k not in PHASES}
    return c


def comparable(config: dict) -> dict:
    """`config` without what a resume does not compare, JSON-normalized (tuples as lists)."""
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in NOT_COMPARED}))


def differences(new: Any, old: Any, path: str = "") -> list[str]:
    """Where `new` and `old` configs differ ("created" aside), one readable line each."""
    if isinstance(new, dict) and isinstance(old, dict):
        out = []
        for k in sorted(set(new) | set(old), key=str):
            if k == "created" and not path:
                continue
            out += differences(new.get(k, "<absent>"), old.get(k, "<absent>"), f"{path}.{k}" if path else str(k))
        return out
    return [] if new == old else [f"{path}: {_short(new)} now, {_short(old)} in the directory"]


def _short(x: Any) -> str:
    s = json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else repr(x)
    return s if len(s) <= 60 else s[:57] + "..."
