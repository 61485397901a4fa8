"""A run directory: its files, its lock, and how a run starts there (new, resumed or replaced).

A fresh start (`resume=False`, CLI `--fresh`) replaces only a kn run (its config.json says so) or
an empty directory; anything else is refused and nothing is deleted.
"""
from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from . import config as C

log = logging.getLogger(__name__)

CONFIG, JOURNAL, LOCK = "config.json", "journal.jsonl", ".lock"
SELECTION = "selection.json"  # the CLI's fact selection, reused on resume (kn.cli)


class RunConfigError(ValueError):
    """The output directory holds a different run, or is not a run directory."""


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """One writer per run directory (advisory lock; the OS drops it when a killed process dies)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out / LOCK, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunConfigError(f"another process is writing to the run in {out}; wait for it or stop it") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_json(path: Path, obj: dict) -> None:
    """Atomically: a temporary file, fsynced, then renamed over `path`."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_config(out: Path) -> dict:
    """The config.json of the kn run in `out` (FileNotFoundError / ValueError if there is none)."""
    path = Path(out) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{out} holds no kn run ({CONFIG} missing)")
    cfg = _json_or_none(path)
    if not C.is_run_config(cfg):
        raise ValueError(f"{out} holds no kn run: its {CONFIG} is not a kn run's config")
    return cfg


def check_out(out: Path, resume: bool) -> None:
    """Refuse, before any work, a directory a run may not use: one whose config.json is not a kn
    run's, or (for a fresh start) one that is neither a kn run nor empty. Nothing is deleted."""
    out = Path(out)
    if not out.is_dir():
        return
    stored = _stored_config(out)
    if not resume and stored is None:
        others = sorted(p.name for p in out.iterdir() if p.name not in (LOCK, SELECTION))
        if others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise RunConfigError(f"{out} is not a kn run (no {CONFIG}) and not empty ({shown}): a fresh run replaces "
                                 f"only a kn run or an empty directory, so nothing was deleted; choose another output "
                                 f"directory")


def start(out: Path, config: dict, resume: bool, tables: Iterable[str]) -> None:
    """Write config.json, or check it against the one in `out` (resume), or clear the run in `out` (fresh)."""
    check_out(out, resume)
    stored = _stored_config(out)
    if not resume and stored is not None:
        _clear(out, tables)
        stored = None
    if stored is not None:
        _check_resumable(out, config, stored)
        log.info("resuming the run in %s", out)
    elif (out / JOURNAL).exists() and (out / JOURNAL).stat().st_size:
        raise RunConfigError(f"{out} has a journal but no {CONFIG}: it is not a kn run directory kn can resume or "
                             f"replace; choose another output directory")
    else:
        write_json(out / CONFIG, {**config, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def _stored_config(out: Path) -> dict | None:
    """The kn run config in `out`, None if there is no config.json; refuses any other config.json."""
    path = out / CONFIG
    if not path.exists():
        return None
    cfg = _json_or_none(path)
    if not C.is_run_config(cfg):
        raise RunConfigError(f"{out} is not a kn run: its {CONFIG} is not a kn run's config, so kn neither resumes nor "
                             f"replaces it (nothing was deleted); choose another output directory")
    return cfg


def _clear(out: Path, tables: Iterable[str]) -> None:
    """Remove the kn run in `out` (a fresh start): its config, journal and tables, nothing else."""
    for name in [CONFIG, JOURNAL, *(f"{t}.parquet" for t in tables)]:  # a CLI selection is checked by its key
        if (out / name).exists():
            log.warning("resume=False: removing %s", out / name)
            (out / name).unlink()


def _check_resumable(out: Path, config: dict, stored: dict) -> None:
    try:
        diffs = C.blocking_differences(config, stored)
    except ValueError as err:
        raise RunConfigError(f"{out} holds a run kn cannot resume: {err}") from None
    if diffs:
        raise RunConfigError(
            f"{out} holds a run with a different configuration (model, data or common settings), so it cannot be "
            f"resumed: " + "; ".join(diffs)
            + "\nRerun with the same model, data and settings to resume it (the phases and their settings may "
              "change: what they invalidate is recomputed), choose another output directory for a new run, or "
              "pass resume=False (CLI: --fresh) to replace it.")


def _json_or_none(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
