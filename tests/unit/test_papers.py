"""kn.papers: the papers' numbers read from the book's table, never typed in a chapter."""
from pathlib import Path

import pandas as pd
import pytest

from kn import papers

TABLE = Path(__file__).resolve().parents[2] / "book" / "results" / "papers.csv"


def test_value_reads_the_one_row_of_a_quantity():
    t = papers.load(TABLE)
    raw = pd.read_csv(TABLE)
    q = "suppression of the knowledge neurons: change of P(gold)"
    assert papers.value(t, q) == float(raw[raw.quantity == q].value.iloc[0]) < 0
    assert papers.value(t, "erasing a relation: its perplexity after / before", data="PARAREL P19") > 1


def test_none_or_several_rows_are_refused_naming_the_quantities(tmp_path):
    t = papers.load(TABLE)
    with pytest.raises(ValueError, match="0 numbers for 'nope'.*the quantities are"):
        papers.value(t, "nope")
    with pytest.raises(ValueError, match="2 numbers"):  # two relations erased: data= tells them apart
        papers.value(t, "erasing a relation: its perplexity after / before")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        papers.load(tmp_path / "x.csv")
