"""Recorded results: small tidy tables with their provenance, as the book keeps them (`book/results/`).

A recording is one directory: one CSV per table and ``provenance.json`` (the command that produced
it, the kn commit, dates, the machine, seconds, package versions and, for a dataset run, the run's
config). Chapters read recordings and quote numbers from them; nothing is typed by hand.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import pandas as pd

from .version import __version__

PROVENANCE = "provenance.json"
RUN_TABLES = ("relations", "facts", "neurons")


def machine() -> dict:
    """This machine: CPU model, cores, memory, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "os": platform.platform()}


def commit(path: str | os.PathLike | None = None) -> str | None:
    """The git commit of the kn source at `path` (default: this package's checkout), with "+dirty"
    when kn/ has uncommitted changes; None outside a git checkout."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def versions() -> dict:
    """Versions of kn and of the packages its numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"kn": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def now() -> str:
    """The current UTC time as provenance writes it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def provenance(command: str, *, seconds: float | None = None, started: str | None = None,
               kn_commit: str | None = None, **extra) -> dict:
    """What a recording says about how it was made. `kn_commit` defaults to this checkout's commit
    (pass the commit the numbers were computed at when recording later)."""
    return {
        "command": command,
        "commit": kn_commit if kn_commit is not None else commit(),
        "started": started,
        "recorded": now(),
        "seconds": None if seconds is None else round(float(seconds), 1),
        "machine": machine(),
        "versions": versions(),
        **extra,
    }


def record(dest: str | os.PathLike, tables: Mapping[str, pd.DataFrame], prov: dict) -> Path:
    """Write `tables` (name -> DataFrame) as CSV files and `prov` as provenance.json into `dest`,
    replacing an earlier recording's files of the same names."""
    if not tables:
        raise ValueError("record needs at least one table")
    bad = [name for name, df in tables.items() if not isinstance(df, pd.DataFrame)]
    if bad:
        raise TypeError(f"tables must map names to pandas DataFrames; {', '.join(map(str, bad))} are not")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False)
    prov = {**prov, "tables": {name: len(df) for name, df in tables.items()}}
    (out / PROVENANCE).write_text(json.dumps(prov, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def record_run(run_dir: str | os.PathLike, dest: str | os.PathLike, command: str, *,
               seconds: float | None = None, kn_commit: str | None = None) -> Path:
    """Record the relations, facts and neurons tables of a finished run directory (`kn.run`, any
    format) with its config. A multilingual run: those tables with a language column, its LIKN
    table and, where `kn.crosslingual` journaled them in the run's directory, its cross-lingual
    effects and edits."""
    from .runs import MultiRunResult, load_run

    res = load_run(run_dir)
    if not res.complete:
        raise ValueError(f"the run in {run_dir} is not finished ({len(res.facts)} of "
                         f"{res.config['data']['n_facts']} facts); finish it (run it again) before recording")
    if seconds is None:
        seconds = float(res.facts["seconds"].sum())
    prov = provenance(command, seconds=seconds, started=res.config.get("created"), kn_commit=kn_commit,
                      run_config=res.config)
    tables = {name: getattr(res, name) for name in RUN_TABLES}
    if isinstance(res, MultiRunResult):
        tables |= _multilingual_tables(res)
    return record(dest, tables, prov)


def _multilingual_tables(res) -> dict:
    from . import crosslingual as X

    out = {"likn": res.likn()[0]}
    for name, load in (("crosslingual", X.load_effects), ("crosslingual_edits", X.load_edits)):
        t = load(res.out_dir)
        if len(t):
            out[name] = t
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
            "recorded": p.get("recorded"), "seconds": p.get("seconds"),
            "machine": f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB",
            "versions": ", ".join(f"{k} {val}" for k, val in v.items()),
        }, name=self.path.name)


def read(path: str | os.PathLike) -> Recording:
    """The recording in `path` (raises FileNotFoundError naming what is missing)."""
    where = Path(path)
    if not (where / PROVENANCE).exists():
        raise FileNotFoundError(f"no recording in {where} ({PROVENANCE} missing)")
    prov = json.loads((where / PROVENANCE).read_text(encoding="utf-8"))
    tables = {name: pd.read_csv(where / f"{name}.csv", keep_default_na=True) for name in prov.get("tables", {})}
    return Recording(where, tables, prov)
