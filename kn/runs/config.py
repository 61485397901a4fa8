"""What config.json records about a run, and how two configs are compared for a resume.

config.json = {"kind": "kn run", "format": 2, "kn_version", "settings": RunSettings.asdict(),
"model": lm.describe(), "data": {name, fingerprint, n_facts, relations}, "created"}. Format 1 (kn
before kn.runs) had no "kind", `method` and `steps` where format 2 has `attribution` (the settings
value's dict), and no `phases` or `relation_neuron_share`; `upgrade` reads it as the format 2 config
it stands for, so such a run loads and resumes.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from ..data.schema import fingerprint as schema_fingerprint
from ..version import __version__
from .settings import RunSettings

FORMAT = 2
KIND = "kn run"


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
    """`config` in the current format (a format 1 config as the format 2 config it stands for)."""
    fmt = config.get("format")
    if fmt == FORMAT:  # settings added since it was written take their defaults (what the run used)
        return {**config, "settings": RunSettings.from_dict(config["settings"]).asdict()}
    if fmt == 1:
        return {"kind": KIND, **config, "format": FORMAT,
                "settings": RunSettings.from_format1(config["settings"]).asdict()}
    raise ValueError(f"config format {fmt!r} is not one this kn reads (1 or {FORMAT}): written by a newer kn?")


def settings_of(config: dict) -> RunSettings:
    """The RunSettings a config records (any format)."""
    return RunSettings.from_dict(upgrade(config)["settings"])


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
