"""A run's fact selection kept where other runs can find it: runs of the same facts under other
settings (the agreement study's seven, a map re-recorded at another rule) skip probing which facts the
model knows, minutes on a large dataset. Keyed by everything the selection depends on (the data's
fingerprint, the model, relations, languages, per-relation cap, --known, seed, kn's version, and the
weights' dtype, which the probe ranks with); a model given as a local path is not shared, since its
weights may change under the same name."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import MutableMapping
from pathlib import Path

from ..cache import cache_dir


def path_of(key: dict) -> Path:
    """The file the selection of `key` (JSON-able) is kept in: under ``$KN_SELECTION_CACHE``, else
    `kn.cache.cache_dir` ("selections")."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    root = os.environ.get("KN_SELECTION_CACHE")
    return (Path(root) if root else cache_dir("selections")) / f"{digest}.json"


def lookup(key: dict) -> dict | None:
    """{"key", "fact_ids", "selection"} kept for `key`, or None (none kept, another key, unreadable)."""
    try:
        saved = json.loads(path_of(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = saved.get("key") == json.loads(json.dumps(key)) if isinstance(saved, dict) else False
    return saved if same and isinstance(saved.get("fact_ids"), list) else None


def keep(key: dict, fact_ids: list[str], selection: dict | None) -> Path | None:
    """Keep a selection for other runs (atomically); None where the cache cannot be written (a
    read-only home: sharing is a saving, never a reason to fail a run)."""
    path = path_of(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "fact_ids": fact_ids, "selection": selection}, ensure_ascii=False),
                       encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def shareable(model: str) -> bool:
    """A model named by the registry or the hub, not a local directory (its weights may change)."""
    return not os.path.exists(model)


class Progress(MutableMapping):
    """A selection's relations done so far (`kn.data.select_facts`' memo), kept beside the selection of
    the same key, each relation written as it is done: a run killed while it probes resumes at the next
    relation. Unwritable or unreadable, it is an empty memo (a saving, never a failure)."""

    def __init__(self, key: dict):
        self.path = path_of(key).with_suffix(".partial.json")
        self.key = json.loads(json.dumps(key))
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            self.done = dict(saved["relations"]) if saved.get("key") == self.key else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.done = {}

    def __getitem__(self, relation: str) -> dict:
        return self.done[relation]

    def __setitem__(self, relation: str, value: dict) -> None:
        self.done[relation] = value
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"key": self.key, "relations": self.done}, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass

    def __delitem__(self, relation: str) -> None:
        del self.done[relation]

    def __iter__(self):
        return iter(self.done)

    def __len__(self) -> int:
        return len(self.done)

    def discard(self) -> None:
        """Forget the relations done (the whole selection is kept now, or a fresh one begins)."""
        self.done = {}
        self.path.unlink(missing_ok=True)
