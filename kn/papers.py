"""The papers' own numbers, as the book keeps them (`book/results/papers.csv`: paper, source, model,
data, quantity, value), so no chapter types one: `value(table, quantity)` reads one back."""
from __future__ import annotations

import os
from pathlib import Path

from . import checks

COLUMNS = ["paper", "source", "model", "data", "quantity", "value"]


def load(path: str | os.PathLike):
    """The papers' numbers table (a DataFrame of `COLUMNS`)."""
    import pandas as pd

    t = pd.read_csv(Path(path))
    missing = [c for c in COLUMNS if c not in t.columns]
    if missing:
        raise checks.ArgumentError(f"{path} is not a papers table: it lacks the columns {missing}")
    return t


def value(table, quantity: str, *, paper: str | None = None, data: str | None = None) -> float:
    """The one number of `table` for `quantity` (narrowed by `paper` and `data`); a clear error for none
    or several."""
    rows = table[table.quantity == quantity]
    if paper is not None:
        rows = rows[rows.paper == paper]
    if data is not None:
        rows = rows[rows.data == data]
    if len(rows) != 1:
        have = sorted(set(table.quantity))
        raise checks.ArgumentError(f"{len(rows)} numbers for {quantity!r} (paper={paper!r}, data={data!r}); "
                                   f"the quantities are {have}")
    return float(rows.value.iloc[0])
