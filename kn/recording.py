"""Recorded results: small tidy tables with their provenance, as the book keeps them (`book/results/`).

A recording is one directory: one CSV per table and ``provenance.json`` (the command that produced
it, the kn commit, dates, the machine, seconds, package versions and, for a dataset run, the run's
config). Chapters read recordings and quote numbers from them; nothing is typed by hand.

kn records only into an empty (or new) directory or one it recorded before, and replaces only the
files it wrote there: provenance.json says ``"kind": "kn recording"`` and lists them (``"files"``).
A recording made before that marker is kn's if its provenance.json has kn's fields ("command",
"commit", "tables") and every table it lists has its CSV; its files are those CSVs and
provenance.json. A directory holding any other file is refused, naming it, and nothing is written.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from . import checks
from .provenance import commit, finite, machine, now, versions

log = logging.getLogger(__name__)

PROVENANCE = "provenance.json"
KIND = "kn recording"
RUN_TABLES = ("relations", "facts", "neurons")


def provenance(command: str, *, seconds: float | None = None, started: str | None = None,
               kn_commit: str | None = None, **extra) -> dict:
    """What a recording says about how it was made. `kn_commit` defaults to this checkout's commit
    (pass the commit the numbers were computed at when recording later)."""
    if seconds is not None:
        seconds = checks.number(seconds, "seconds", low=0.0)
    for k, v in extra.items():
        finite(v, k)
    return {
        "command": command,
        "commit": kn_commit if kn_commit is not None else commit(),
        "started": started,
        "recorded": now(),
        "seconds": None if seconds is None else round(seconds, 1),
        "machine": machine(),
        "versions": versions(),
        **extra,
    }


def record(dest: str | os.PathLike, tables: Mapping[str, pd.DataFrame], prov: dict) -> Path:
    """Write `tables` (name -> DataFrame) as CSV files and `prov` as provenance.json into `dest`: an
    empty or new directory, or one kn recorded before, whose files this recording replaces (those
    it no longer has are removed). Any other file in `dest` is refused (`check_dest`)."""
    if not tables:
        raise ValueError("record needs at least one table")
    bad = [name for name, df in tables.items() if not isinstance(df, pd.DataFrame)]
    if bad:
        raise TypeError(f"tables must map names to pandas DataFrames; {', '.join(map(str, bad))} are not")
    odd = [name for name in tables if not _plain(f"{name}.csv")]
    if odd:
        raise ValueError(f"table names must be plain file names (no path separator): {odd}")
    finite(prov, "prov")
    for name, df in tables.items():
        _no_infinity(name, df)
    out = Path(dest)
    before = check_dest(out)
    out.mkdir(parents=True, exist_ok=True)
    files = sorted({*(f"{name}.csv" for name in tables), PROVENANCE})
    tables = {name: _with_json_cells(df) for name, df in tables.items()}
    json_columns = {name: cols for name, (_, cols) in tables.items() if cols}
    tables = {name: df for name, (df, _) in tables.items()}
    prov = {**prov, "kind": KIND, "tables": {name: len(df) for name, df in tables.items()}}
    if json_columns:
        prov["json_columns"] = json_columns
    text_columns = {name: cols for name, df in tables.items()
                    if (cols := [c for c in df.columns if c not in json_columns.get(name, ())
                                 and (df[c].dtype == object or pd.api.types.is_string_dtype(df[c]))])}
    if text_columns:  # read back as text: a CSV reader would make "true" / "1" of a text column a bool / number
        prov["text_columns"] = text_columns
    # kn's claim on every file comes first: a recording killed part-way is still kn's to redo
    _write_provenance(out, {**prov, "files": sorted(before | set(files))})
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False)
    stale = sorted(before - set(files))
    if stale:
        _write_provenance(out, {**prov, "files": files})
        for name in stale:
            log.info("removing %s: the recording there before had it, this one does not", out / name)
            (out / name).unlink(missing_ok=True)
    return out


def _no_infinity(name: str, df: pd.DataFrame) -> None:
    """Refuse +-inf in a table (a CSV would hold "inf"); NaN is a missing value (an empty cell, null in a
    JSON cell)."""
    import numpy as np

    for c in df.columns:
        col = df[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            bad = np.isinf(col.to_numpy(dtype=float, na_value=np.nan))
        elif col.dtype == object:
            bad = col.map(_has_infinity).to_numpy(dtype=bool)
        else:
            continue
        if bad.any():
            raise checks.ArgumentError(f"table {name!r}, column {c!r} holds {int(bad.sum())} infinite value(s) (first "
                                       f"in row {int(np.argmax(bad))}); a recording holds finite numbers or missing ones "
                                       "(NaN): replace them first")


def _has_infinity(v) -> bool:
    if isinstance(v, float):
        return v in (float("inf"), float("-inf"))
    if isinstance(v, dict):
        return any(map(_has_infinity, v.values()))
    if isinstance(v, (list, tuple)):
        return any(map(_has_infinity, v))
    return False


def _nan_to_none(v):
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_nan_to_none(x) for x in v]
    return v


def _with_json_cells(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """`df` with its list- or dict-valued columns as JSON text (a CSV cell holds text), and their names
    (`read` parses them back)."""
    cols = [c for c in df.columns if df[c].dtype == object
            and df[c].map(lambda v: isinstance(v, (list, tuple, dict))).any()]
    if not cols:
        return df, []
    return df.assign(**{c: df[c].map(lambda v: json.dumps(_nan_to_none(v), allow_nan=False)) for c in cols}), cols


def check_dest(dest: str | os.PathLike) -> set[str]:
    """The files of the kn recording in `dest` (empty if `dest` is empty or absent); refuses, naming
    them, a `dest` holding any file kn did not record there (see the module docstring)."""
    out = Path(dest)
    if not out.exists():
        return set()
    if not out.is_dir():
        raise ValueError(f"{out} is a file; record into a directory (an empty one or one kn recorded before)")
    owned = _owned(out)
    others = sorted(p.name for p in out.iterdir() if p.name not in owned and p.name != PROVENANCE + ".tmp")
    if others:
        shown = ", ".join(others[:5]) + (f", ... ({len(others)} in all)" if len(others) > 5 else "")
        why = f" (its {PROVENANCE} is not a kn recording's)" if PROVENANCE in others else ""
        raise ValueError(f"{out} holds files kn did not record: {shown}{why}. kn records only into an empty "
                         f"directory or one it recorded before and never replaces a file it did not write, so "
                         f"nothing was written; choose another destination directory (dest; CLI: kn record "
                         f"DEST, --record)")
    return owned


def _owned(out: Path) -> set[str]:
    """The files kn recorded in `out`, by its provenance.json (none if it is not a kn recording's)."""
    try:
        prov = json.loads((out / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(prov, dict):
        return set()
    files = prov.get("files")
    if prov.get("kind") == KIND and isinstance(files, list) and all(isinstance(f, str) and _plain(f) for f in files):
        return {PROVENANCE, *files}
    tables = prov.get("tables")  # a recording from before the marker
    if ("kind" not in prov and {"command", "commit"} <= set(prov) and isinstance(tables, dict) and tables
            and all(isinstance(t, str) and _plain(f"{t}.csv") and (out / f"{t}.csv").is_file() for t in tables)):
        return {PROVENANCE, *(f"{t}.csv" for t in tables)}
    return set()


def _plain(name: str) -> bool:
    """A file name alone: no directory part, not . or .."""
    return bool(name) and name not in (".", "..") and "/" not in name and os.sep not in name


def _write_provenance(out: Path, prov: dict) -> None:
    """provenance.json, atomically (provenance.json.tmp, kn's own name wherever it is, renamed over it)."""
    tmp = out / (PROVENANCE + ".tmp")
    tmp.write_text(json.dumps(prov, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / PROVENANCE)


def record_run(run_dir: str | os.PathLike, dest: str | os.PathLike, command: str | None = None, *,
               seconds: float | None = None, kn_commit: str | None = None) -> Path:
    """Record a finished run directory (`kn.run`, any format): its relations, facts and neurons tables
    and each of its phases' own tables (degenerate pairs, statements, ...), with its config. A
    multilingual run: those tables with a language column, its LIKN table and, where
    `kn.crosslingual` journaled them in the run's directory, its cross-lingual effects and edits.

    The provenance comes from the run itself (`kn.runs.sessions`): the command of its last session (whose
    settings its config and results hold), the kn commit at its start, its sessions and their wall-clock
    seconds. `command`, `seconds` and
    `kn_commit` are for runs that did not record them (made by the Python API without `command=`, or
    by kn before sessions were kept); a `command` other than the one the run recorded is refused."""
    from .runs import MultiRunResult, load_run
    from .runs.phases import PHASES
    from .runs.sessions import of as sessions_of

    check_dest(dest)  # before loading the run
    res = load_run(run_dir)
    if not res.complete:
        raise ValueError(f"the run in {run_dir} is not finished ({len(res.facts)} of "
                         f"{res.config['data']['n_facts']} facts); finish it (run it again) before recording")
    configs = [r.config for r in res.runs.values()] if isinstance(res, MultiRunResult) else [res.config]
    sessions = [s for c in configs for s in sessions_of(c)]
    # the last session's command: a session that changed a setting recomputed what depends on it, so the
    # run's config and results are that command's (every session's command stays in `sessions`)
    recorded = next((s["command"] for s in reversed(sessions) if s.get("command")), None)
    if recorded and command and command != recorded:
        raise ValueError(f"the run in {run_dir} recorded the command that made it ({recorded!r}); kn record takes it "
                         f"from there: leave out command (CLI: --command)")
    command = recorded or command
    if not command:
        raise ValueError(f"the run in {run_dir} recorded no command (made with the Python API without command=, or "
                         "by an older kn): pass the command that made it (CLI: --command)")
    untimed = 0
    if seconds is None:  # a session killed outright (SIGKILL) has no seconds: counted apart, not guessed
        timed = [s["seconds"] for s in sessions if s.get("seconds") is not None]
        untimed = len(sessions) - len(timed)
        seconds = float(sum(timed)) if timed else float(res.facts["seconds"].sum())
    if kn_commit is None and sessions:
        kn_commit = sessions[0].get("commit")
    started = sessions[0]["started"] if sessions else res.config.get("created")
    chosen = _selection_counts(Path(run_dir))
    prov = provenance(command, seconds=seconds, started=started, kn_commit=kn_commit, run_config=res.config,
                      sessions=sessions, **({"selection": chosen} if chosen else {}),
                      **({"untimed_sessions": untimed} if untimed and timed else {}))
    tables = {name: getattr(res, name) for name in RUN_TABLES}
    if isinstance(res, MultiRunResult):
        tables |= _multilingual_tables(res)
    else:
        if len(res.languages) > 1:
            tables["likn"] = res.likn()[0]
        tables |= {t: res.tables[t] for n in res.settings.phases for t in PHASES[n].table_names
                   if t not in tables and t in res.tables}
    return record(dest, tables, prov)


def _selection_counts(run_dir: Path) -> dict | None:
    """What the CLI's fact selection of a run says (`kn.data.select_facts`' ``info["selection"]``: per
    language the facts with a version, usable, probed and known), from its selection.json; None without."""
    from .runs.directory import SELECTION

    try:
        saved = json.loads((run_dir / SELECTION).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved.get("selection") if isinstance(saved, dict) else None


def _multilingual_tables(res) -> dict:
    """A multilingual run of an older kn: its LIKN table and the cross-lingual tables its side journals
    (a header, then a record per fact) hold, if any."""
    from . import crosslingual as X
    from .runs.journal import Journal

    out = {"likn": res.likn()[0]}
    for name, file, build in (("crosslingual", "crosslingual.jsonl", X.table),
                              ("crosslingual_edits", "crosslingual_edits.jsonl", X.edit_table)):
        recs = [r for r in Journal(res.out_dir / file).read(repair=False)[1:] if r.get("type") == "fact"]
        if recs:
            out[name] = build(recs)
    return out


@dataclass(frozen=True)
class Recording:
    """A recording read back: `tables` (name -> DataFrame) and `provenance`."""

    path: Path
    tables: dict
    provenance: dict

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def summary(self) -> pd.Series:
        """The provenance as one readable column (command, commit, dates, machine, seconds)."""
        p = self.provenance
        m = p.get("machine", {})
        v = p.get("versions", {})
        return pd.Series({
            "command": p.get("command"), "kn commit": p.get("commit"), "started": p.get("started"),
            "recorded": p.get("recorded"),
            "seconds": p.get("seconds") if not p.get("untimed_sessions") else
            f"{p.get('seconds')} and {p['untimed_sessions']} session(s) stopped untimed",
            "machine": f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB",
            "versions": ", ".join(f"{k} {val}" for k, val in v.items()),
        }, name=self.path.name)

    def summaries(self) -> pd.DataFrame:
        """`summary` as columns: one per part of a study recorded in parts (`read_study`), else one."""
        parts = self.provenance.get("parts")
        if parts is None:
            return self.summary().to_frame()
        return pd.concat([Recording(self.path / n, {}, p).summary() for n, p in parts.items()], axis=1)


def read(path: str | os.PathLike) -> Recording:
    """The recording in `path` (raises FileNotFoundError naming what is missing)."""
    where = Path(path)
    if not (where / PROVENANCE).exists():
        raise FileNotFoundError(f"no recording in {where} ({PROVENANCE} missing)")
    prov = json.loads((where / PROVENANCE).read_text(encoding="utf-8"))
    text = prov.get("text_columns", {})
    tables = {name: pd.read_csv(where / f"{name}.csv", keep_default_na=True, dtype={c: str for c in text.get(name, ())})
              for name in prov.get("tables", {})}
    for name, cols in prov.get("json_columns", {}).items():
        tables[name] = tables[name].assign(**{c: tables[name][c].map(json.loads) for c in cols})
    return Recording(where, tables, prov)


def read_study(path: str | os.PathLike) -> Recording:
    """A recording (`read`), or a study recorded in parts: `path/PART/` each a recording (runs that each fit
    a session, e.g. the edit study's), read as one whose tables are the parts' concatenated, each row with
    its ``part``, and whose provenance is {"parts": {PART: the part's provenance}}; parts in name order."""
    where = Path(path)
    if (where / PROVENANCE).exists():
        return read(where)
    parts = {p.parent.name: read(p.parent) for p in sorted(where.glob(f"*/{PROVENANCE}"))}
    if not parts:
        raise FileNotFoundError(f"no recording in {where}: neither {PROVENANCE} nor PART/{PROVENANCE}")
    names = list(dict.fromkeys(n for r in parts.values() for n in r.tables))
    tables = {n: pd.concat([r.tables[n].assign(part=part) for part, r in parts.items() if n in r.tables],
                           ignore_index=True) for n in names}
    return Recording(where, tables, {"parts": {part: r.provenance for part, r in parts.items()}})


def studies(root: str | os.PathLike) -> dict[str, Recording]:
    """{NAME: `read_study`} of every folder under `root` that is a recording or holds recorded parts."""
    root = Path(root)
    found = sorted({p.parent for p in root.glob(f"*/{PROVENANCE}")} |
                   {p.parent.parent for p in root.glob(f"*/*/{PROVENANCE}")})
    return {p.name: read_study(p) for p in found}
