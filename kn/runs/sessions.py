"""A run's sessions: each start of `kn.run` on its directory (the first and every resume), kept in its
config.json under "sessions": the command as given (the CLI's own command line; `command=` of the API,
else None), the kn commit and version, the machine and package versions, when it started and
finished, and its wall-clock seconds. `kn record` takes the command, the commit at the run's start and
the seconds from here, so no provenance is typed by hand. The caller holds the run's lock."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..provenance import commit, machine, now, versions
from .directory import CONFIG, write_json

KEY = "sessions"


def begin(out: Path, command: str | None) -> float:
    """Record a session's start in `out`'s config.json; returns its start (for `end`)."""
    cfg = _read(out)
    cfg[KEY] = [*cfg.get(KEY, []), {"command": command, "commit": commit(), "kn_version": versions()["kn"],
                                    "started": now(), "finished": None, "seconds": None, "machine": machine(),
                                    "versions": versions()}]
    write_json(out / CONFIG, cfg)
    return time.perf_counter()


def end(out: Path, t0: float, interrupted: bool = False) -> None:
    """Record the last session's end (`interrupted`: stopped before its work was done, e.g. Ctrl-C or
    SIGTERM; a session killed outright keeps seconds None)."""
    cfg = _read(out)
    if cfg.get(KEY):
        cfg[KEY][-1] |= {"finished": now(), "seconds": round(time.perf_counter() - t0, 1),
                         **({"interrupted": True} if interrupted else {})}
        write_json(out / CONFIG, cfg)


def of(config: dict) -> list[dict]:
    """The sessions a run's config records (none for runs made before kn kept them)."""
    return list(config.get(KEY, []))


def _read(out: Path) -> dict:
    return json.loads((out / CONFIG).read_text(encoding="utf-8"))
