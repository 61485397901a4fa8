"""A run's tidy tables, built from its journal by its phases (see `phases.base`).

``facts`` (a row per fact), ``relations`` (a row per relation), ``prompts`` (a row per fact x prompt):
keys first, then each phase's columns in phase order; the facts table ends with ``seconds`` (the
fact's recorded seconds, over phases) and ``error`` (the first phase's error, "<phase>: " before a
later phase's). Phases add tables of their own (locate: ``neurons``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .phases.base import Phase
from .state import State

SHARED = ("facts", "relations", "prompts")


def build(state: State, phases: Sequence[Phase]) -> dict:
    """{name: DataFrame}: the shared tables, then each phase's own."""
    facts = facts_table(state, phases)
    out = {"facts": facts, "relations": relations_table(state, phases, facts),
           "prompts": prompts_table(state, phases)}
    for p in phases:
        out |= p.tables(state)
    return out


def write(out: Path, tables: dict) -> None:
    """Each table as `<name>.parquet` in `out` (written aside, then renamed)."""
    for name, df in tables.items():
        tmp = out / f".{name}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out / f"{name}.parquet")


def columns(keys: Sequence[str], phases: Sequence[Phase], attr: str, tail: Sequence[str] = ()) -> list[str]:
    """A table's column order: `keys`, each phase's columns (`attr`) placed per its `follows`, `tail`."""
    cols = list(keys)
    for p in phases:
        for c in getattr(p, attr):
            if c in cols:
                raise ValueError(f"phase {p.name!r} adds column {c!r}, which the table already has")
            anchor = p.follows.get(c)
            cols.insert(cols.index(anchor) + 1 if anchor in cols else len(cols), c)
    return cols + list(tail)


def facts_table(state: State, phases: Sequence[Phase]):
    import pandas as pd

    root = phases[0]
    rows = []
    for fid, rec in state.all(root.fact_record).items():
        row = {"fact_id": fid, "relation": rec["relation"]}
        for p in phases:
            row |= p.fact_row(fid, state)
        row["seconds"] = _seconds(fid, state, phases)
        row["error"] = _error(fid, state, phases)
        rows.append(row)
    df = pd.DataFrame(rows, columns=columns(("fact_id", "relation"), phases, "fact_columns", ("seconds", "error")))
    for p in phases:
        for col, dtype in p.dtypes.items():
            df[col] = df[col].astype(dtype)
    return df


def relations_table(state: State, phases: Sequence[Phase], facts):
    import pandas as pd

    names = dict.fromkeys(r for p in phases if p.relation_record for r in state.all(p.relation_record))
    rows = []
    for name in names:
        sub = facts[facts.relation == name]
        row = {"relation": name, "facts": len(sub), "errors": int(sub.error.notna().sum())}
        for p in phases:
            row |= p.relation_row(name, sub, state)
        rows.append(row)
    return pd.DataFrame(rows, columns=columns(("relation", "facts", "errors"), phases, "relation_columns"))


def prompts_table(state: State, phases: Sequence[Phase]):
    import pandas as pd

    root = phases[0]
    rows = []
    for fid, rec in state.all(root.fact_record).items():
        for j in range(root.n_prompts(fid, state)):
            row = {"fact_id": fid, "relation": rec["relation"], "prompt_index": j}
            for p in phases:
                row |= p.prompt_row(fid, j, state)
            rows.append(row)
    return pd.DataFrame(rows, columns=columns(("fact_id", "relation", "prompt_index"), phases, "prompt_columns"))


def _seconds(fact_id: str, state: State, phases: Sequence[Phase]) -> float | None:
    found = [r["seconds"] for p in phases if (r := state.get(p.fact_record, fact_id)) and "seconds" in r]
    return sum(found) if found else None


def _error(fact_id: str, state: State, phases: Sequence[Phase]) -> str | None:
    for i, p in enumerate(phases):
        err = p.error(fact_id, state)
        if err:
            return ("" if i == 0 else f"{p.name}: ") + f"{err['type']}: {err['message']}"
    return None
