"""A run directory: its files, its lock, and how a run starts there (new, resumed or replaced).

kn runs only in an empty directory or a kn run's: one whose config.json is a kn run's config, or
(multilingual, `kn.runs.multilingual`) whose languages.json is a kn multilingual run's. Before a run
starts, the directory may hold only what kn writes first: its lock file and the CLI's selection.json.
Anything else is refused, listing what is there, and nothing is written. A fresh start
(`resume=False`, CLI `--fresh`) moves the kn run there aside, whole, to the sibling
``<dir>.replaced-<UTC time>`` and starts anew; nothing is ever deleted.
"""
from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

from . import config as C

log = logging.getLogger(__name__)

CONFIG, JOURNAL, LOCK = "config.json", "journal.jsonl", ".lock"
SELECTION = "selection.json"  # the CLI's fact selection, reused on resume (kn.cli)
LANGUAGES, MULTILINGUAL = "languages.json", "kn multilingual run"  # a multilingual run's file and kind

_HELD: dict[str, IO] = {}  # run directory (absolute path) -> the lock file this process holds in it


class RunConfigError(ValueError):
    """The output directory holds a different run, or is not a run directory."""


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """One writer per run directory (advisory lock; the OS drops it when a killed process dies).
    A directory that is neither empty nor a kn run is refused first, before its lock file is made."""
    refuse_foreign(out)
    key = os.path.abspath(out)
    fh = _lock(Path(out))
    if fh is None:  # not POSIX: no lock
        yield
        return
    _HELD[key] = fh
    try:
        yield
    finally:
        _HELD.pop(key, fh).close()  # closing the file drops the lock (`replace` may have swapped it)


def _lock(out: Path) -> IO | None:
    """out/.lock, opened and locked (None without fcntl). The lock is checked to be the file now at
    out/.lock: a process that opened it just before `replace` moved the directory aside is refused."""
    try:
        import fcntl
    except ImportError:
        return None
    fh = open(out / LOCK, "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise RunConfigError(f"another process is writing to the run in {out}; wait for it or stop it") from None
    try:
        same = os.path.samestat(os.fstat(fh.fileno()), os.stat(out / LOCK))
    except FileNotFoundError:
        same = False
    if not same:
        fh.close()
        raise RunConfigError(f"the run in {out} was moved aside by another process (a fresh start) as this one "
                             f"started; run again")
    return fh


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


def kind(out: Path) -> str | None:
    """"run" if `out` holds a kn run (its config.json), "multilingual" if a multilingual one (its
    languages.json), else None."""
    out = Path(out)
    if C.is_run_config(_json_or_none(out / CONFIG)):
        return "run"
    cfg = _json_or_none(out / LANGUAGES)
    if isinstance(cfg, dict) and cfg.get("kind") == MULTILINGUAL:
        return "multilingual"
    return None


def foreign(out: Path) -> list[str]:
    """What in `out` keeps a run out of it, sorted: nothing if `out` holds a kn run (or does not
    exist); else everything but kn's lock file and a selection.json of the CLI's."""
    out = Path(out)
    if not out.is_dir() or kind(out) is not None:
        return []
    return sorted(p.name for p in out.iterdir() if p.name != LOCK and not (p.name == SELECTION and _is_selection(p)))


def refuse_foreign(out: Path) -> None:
    """Raise RunConfigError, listing what is there, if `out` is neither empty nor a kn run."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunConfigError(f"{out} is a file, not a directory; choose another output directory for out_dir "
                             f"(CLI: --out)")
    names = foreign(out)
    if names:
        shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
        why = f" (its {CONFIG} is not a kn run's config)" if CONFIG in names else ""
        raise RunConfigError(f"{out} is not a kn run{why} and not empty: it holds {shown}. kn runs only in an "
                             f"empty directory or a kn run's and never writes over other files, so nothing was "
                             f"changed; choose another output directory for out_dir (CLI: --out)")


def check_out(out: Path) -> None:
    """Refuse, before any work, a directory the run may not use: one neither empty nor a kn run
    (`refuse_foreign`), or one holding a multilingual run of an older kn (a directory per language,
    which `kn.load_run` still reads)."""
    refuse_foreign(out)
    if kind(out) == "multilingual":
        raise RunConfigError(f"{out} holds a multilingual run of an older kn (a directory per language), which "
                             f"kn.load_run reads but kn run no longer writes; choose another output directory "
                             f"(out_dir; CLI: --out)")


def replace(out: Path) -> Path | None:
    """Move the kn run in `out` (either kind) aside, whole, to the sibling out.replaced-<UTC time>,
    and leave `out` an empty directory; return where the run went (None, nothing moved, if `out`
    holds no kn run). Nothing is deleted.

    Races: the run's lock (and that of every run directory directly inside, the languages of a
    multilingual run) is taken before the move, so a run still writing there is not moved but
    refused; the new `out` is locked before the old lock is let go, and `locked` refuses a process
    that opened the old lock file before the move. A caller inside `locked(out)` keeps holding the
    lock, now of the new directory."""
    out = Path(os.path.abspath(out))
    if not out.is_dir() or kind(out) is None:
        return None
    held = _HELD.get(str(out))
    taken: list = []
    try:
        if held is None:
            taken.append(_lock(out))
        taken += [_lock(d) for d in sorted(out.iterdir()) if d.is_dir() and (d / LOCK).exists()]
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside, n = out.with_name(f"{out.name}.replaced-{stamp}"), 1
        while aside.exists():  # two fresh starts within a second
            n += 1
            aside = out.with_name(f"{out.name}.replaced-{stamp}-{n}")
        os.rename(out, aside)
        out.mkdir()
        log.warning("%s held a kn run: moved it aside to %s (nothing was deleted); starting anew in %s",
                    out, aside, out)
        try:
            new = _lock(out)
        except RunConfigError:
            raise RunConfigError(f"moved the run in {out} aside to {aside}, but another process began writing to "
                                 f"{out} meanwhile; wait for it or stop it") from None
        if held is not None:
            _HELD[str(out)] = new
            taken.append(held)  # the old directory's lock, let go below
        else:
            taken.append(new)
    finally:
        for fh in taken:
            if fh is not None:
                fh.close()
    return aside


def start(out: Path, config: dict, resume: bool) -> None:
    """Write config.json, or check it against the one in `out` (resume), or move the run in `out`
    aside and start anew (fresh: `replace`). The caller holds `locked(out)`."""
    out = Path(out)
    refuse_foreign(out)
    stored = _stored_config(out)
    if not resume and stored is not None:
        replace(out)
        stored = None
    if stored is not None:
        _check_resumable(out, config, stored)
        log.info("resuming the run in %s", out)
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
                             f"replaces it (nothing was changed); choose another output directory")
    return cfg


def _is_selection(path: Path) -> bool:
    sel = _json_or_none(path)
    return (isinstance(sel, dict) and {"key", "fact_ids"} <= set(sel) <= {"key", "fact_ids", "selection"}
            and isinstance(sel["fact_ids"], list))


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
    except (OSError, ValueError, UnicodeDecodeError):
        return None
