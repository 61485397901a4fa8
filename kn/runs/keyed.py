"""A run directory named by what is run: `kn.run(lm, facts, kn.runs.Keyed(parent, name), ...)` runs in
parent/<name>-<key>, the key the first 10 hex digits of the SHA-256 of the run's config (config.json
without "created"; `kn.runs.config`). The same arguments find the same directory, so an interrupted
run resumes; other arguments (steps, facts, model, ...) get a directory of their own instead of a
refusal. The chapters name their runs so: rerun with other papermill parameters, they start anew.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import checks


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
    """10 hex digits naming `config`: its canonical JSON (sorted keys, "created" aside), hashed."""
    body = {k: v for k, v in config.items() if k != "created"}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def resolve(out_dir, config: dict) -> Path:
    """The directory `out_dir` (a path or a `Keyed`) stands for, for a run of `config`."""
    return out_dir.path(config) if isinstance(out_dir, Keyed) else Path(out_dir)
