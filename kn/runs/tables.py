"""A run's tidy tables, built from its journal by its phases (see `phases.base`).

``facts`` (a row per (fact, language)), ``relations`` (a row per (relation, language)), ``prompts``
(a row per (fact, language, prompt)): keys first, then each phase's columns in phase order; the facts
table ends with ``seconds`` (the unit's recorded seconds, over phases) and ``error`` (the first
phase's error, "<phase>: " before a later phase's). Phases add tables of their own (locate:
``neurons``), with a ``language`` column after their first; a phase over every language adds its own
tables as they are.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .phases.base import Phase
from .state import ALL, State

SHARED = ("facts", "relations", "prompts")
KEYS = {"facts": ("fact_id", "language", "relation"), "relations": ("relation", "language", "facts", "errors"),
        "prompts": ("fact_id", "language", "relation", "prompt_index")}


def build(state: State, phases: Sequence[Phase]) -> dict:
    """{name: DataFrame}: the shared tables, then each phase's own."""
    import pandas as pd

    each = [p for p in phases if not p.every_language]
    facts = facts_table(state, each)
    out = {"facts": facts, "relations": relations_table(state, each, facts), "prompts": prompts_table(state, each)}
    for p in each:
        per = [_with_language(t, l) for l in state.languages for t in [p.tables(state.lang(l))]]
        for name in p.table_names:
            frames = [d[name] for d in per if name in d]
            if frames:
                out[name] = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for p in phases:
        if p.every_language:
            out |= p.tables(state.lang(ALL))
    return out


def _with_language(tables: dict, language: str) -> dict:
    out = {}
    for name, df in tables.items():
        df = df.copy()
        df.insert(min(1, len(df.columns)), "language", language)
        out[name] = df
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
    for lang in state.languages:
        view = state.lang(lang)
        for fid, rec in view.all(root.fact_record).items():
            row = {"fact_id": fid, "language": lang, "relation": rec["relation"]}
            for p in phases:
                row |= p.fact_row(fid, view)
            row["seconds"] = _seconds(fid, view, phases)
            row["error"] = _error(fid, view, phases)
            rows.append(row)
    df = pd.DataFrame(rows, columns=columns(KEYS["facts"], phases, "fact_columns", ("seconds", "error")))
    for p in phases:
        for col, dtype in p.dtypes.items():
            df[col] = df[col].astype(dtype)
    return df


def relations_table(state: State, phases: Sequence[Phase], facts):
    import pandas as pd

    rows = []
    for lang in state.languages:
        view = state.lang(lang)
        names = dict.fromkeys(r for p in phases if p.relation_record for r in view.all(p.relation_record))
        for name in names:
            sub = facts[(facts.relation == name) & (facts.language == lang)]
            row = {"relation": name, "language": lang, "facts": len(sub), "errors": int(sub.error.notna().sum())}
            for p in phases:
                row |= p.relation_row(name, sub, view)
            rows.append(row)
    return pd.DataFrame(rows, columns=columns(KEYS["relations"], phases, "relation_columns"))


def prompts_table(state: State, phases: Sequence[Phase]):
    import pandas as pd

    root = phases[0]
    rows = []
    for lang in state.languages:
        view = state.lang(lang)
        for fid, rec in view.all(root.fact_record).items():
            for j in range(root.n_prompts(fid, view)):
                row = {"fact_id": fid, "language": lang, "relation": rec["relation"], "prompt_index": j}
                for p in phases:
                    row |= p.prompt_row(fid, j, view)
                rows.append(row)
    return pd.DataFrame(rows, columns=columns(KEYS["prompts"], phases, "prompt_columns"))


def _seconds(fact_id: str, view, phases: Sequence[Phase]) -> float | None:
    found = [r["seconds"] for p in phases if (r := view.get(p.fact_record, fact_id)) and "seconds" in r]
    return sum(found) if found else None


def _error(fact_id: str, view, phases: Sequence[Phase]) -> str | None:
    for i, p in enumerate(phases):
        err = p.error(fact_id, view)
        if err:
            return ("" if i == 0 else f"{p.name}: ") + f"{err['type']}: {err['message']}"
    return None
