"""Experiments over a finished run, journaled one record per fact (fsynced): an interrupted call
resumes where it stopped, and a call with other settings is refused rather than mixed in."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from . import checks
from .runs.journal import Journal


def journaled(path: Path, header: dict, todo: Sequence[str], relation: dict, work, desc: str,
              progress: bool) -> list[dict]:
    """Run `work(fact_id) -> rows` for each fact of `todo` not yet in the journal at `path` (whose first
    record must equal `header`), one fsynced record per fact; the records of `todo`, in its order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    journal = Journal(path)
    records = journal.read()
    if records and records[0] != header:
        raise checks.ArgumentError(f"{path} was written with other settings ({records[0]}); pass the same "
                                   "settings to resume it, or another out= for new ones")
    if not records:
        journal.append(header)
    done: dict[str, dict] = {}
    for r in records[1:]:
        if r.get("type") == "fact":
            done.setdefault(r["fact_id"], r)
    try:
        for fid in tqdm(todo, desc=desc, unit="fact", disable=not progress):
            if fid not in done:
                rec = {"type": "fact", "fact_id": fid, "relation": relation[fid], "rows": work(fid)}
                journal.append(rec)
                done[fid] = rec
    finally:
        journal.close()
    return [done[f] for f in todo if f in done]


def read_journal(path: Path) -> list[dict]:
    """The fact records of a journal `journaled` wrote ([] if there is none)."""
    return [r for r in Journal(path).read(repair=False)[1:] if r.get("type") == "fact"]
