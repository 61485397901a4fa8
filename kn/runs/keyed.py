"""A run directory named by what is run: `kn.run(lm, facts, kn.runs.Keyed(parent, name), ...)` runs in
parent/<name>-<key>, the key the first 10 hex digits of the SHA-256 of the run's identity (its config
without the phases and their settings, "created" and the kn version: `kn.runs.config.identity`). The
same model, data and common settings find the same directory, so an interrupted run resumes and a run
with more phases or other phase settings reuses what is still valid (`kn.runs.phases.base`); another
model, data or attribution (steps, facts, ...) gets a directory of its own instead of a refusal. The chapters name their runs so: rerun with other papermill parameters, they start anew,
never silently: a new directory beside other <name>-<key> runs is logged as a WARNING naming it and
what differs from the most recent of them (the chapter's parameters that changed).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import checks
from . import config as C
from .directory import CONFIG, LANGUAGES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Keyed:
    """Where a run goes: under `parent`, named `name` and its config's key."""
    parent: str | os.PathLike
    name: str = "run"

    def __post_init__(self):
        if not isinstance(self.parent, (str, os.PathLike)) or not str(self.parent).strip():
            raise checks.ArgumentError(f"Keyed: parent must be a directory path, got {self.parent!r}")
        if not isinstance(self.name, str) or not self.name.strip() or os.sep in self.name:
            raise checks.ArgumentError(f"Keyed: name must be a non-empty file name without {os.sep!r}, "
                                       f"got {self.name!r}")

    def path(self, config: dict) -> Path:
        """parent/<name>-<key> for `config` (a run's config, with or without "created")."""
        return Path(self.parent) / f"{self.name}-{key(config)}"


def key(config: dict) -> str:
    """10 hex digits naming `config`: its identity's canonical JSON (sorted keys), hashed."""
    body = C.identity(config)
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def resolve(out_dir, config: dict) -> Path:
    """The directory `out_dir` (a path or a `Keyed`) stands for, for a run of `config`; a `Keyed`
    naming a new directory beside others of its name says so (`warn_if_new`)."""
    if not isinstance(out_dir, Keyed):
        return Path(out_dir)
    out = out_dir.path(config)
    warn_if_new(out_dir, out, config)
    return out


def warn_if_new(keyed: Keyed, out: Path, config: dict) -> None:
    """A WARNING if `out` does not exist yet while `keyed.parent` holds other <name>-<key> runs:
    the new directory and the config fields that differ from the most recent of them."""
    parent = Path(keyed.parent)
    if out.exists() or not parent.is_dir():
        return
    pattern = re.compile(re.escape(keyed.name) + r"-[0-9a-f]{10}")
    found = []
    for d in parent.iterdir():
        if pattern.fullmatch(d.name) and d.is_dir():
            cfg = _config_of(d)
            if cfg is not None:
                found.append((str(cfg.get("created", "")), d.stat().st_mtime, d.name, cfg))
    if not found:
        return
    *_, last, old = max(found, key=lambda t: t[:3])
    diffs = C.differences(C.identity(json.loads(json.dumps(config, default=str))), C.identity(old))
    log.warning("%s: a new run directory, beside %d other %s-<key> run(s) in %s; the most recent, %s, differs in:"
                "\n  %s", out, len(found), keyed.name, parent, last,
                "\n  ".join(diffs) or "nothing kn records (written by another kn version?)")


def _config_of(d: Path) -> dict | None:
    """The config of the run in `d` (a single-language run's, in the current format; a multilingual
    run's languages.json), None if unreadable."""
    for name in (CONFIG, LANGUAGES):
        try:
            cfg = json.loads((d / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(cfg, dict):
            return None
        if name == CONFIG:
            try:
                cfg = C.upgrade(cfg)
            except (ValueError, KeyError, TypeError):
                pass
        return cfg
    return None
