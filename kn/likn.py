"""Language-independent knowledge neurons (Chen et al. 2024): the knowledge neurons a fact has in
every language it was located in.

Input everywhere: ``sets`` = {language: {fact_id: knowledge neurons}}, a fact present in a language
when it was located there (an empty collection: located, no neuron passed). For each fact, the
languages with neurons are its k languages (the paper drops the empty ones); its LIKN are the
neurons of all k (k >= 2), and "in at least q of k" is the looser count. Pure functions over sets.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping

from . import checks
from .neuron import Neuron

Sets = Mapping[str, Mapping[str, Iterable[Neuron]]]
FACT_COLUMNS = ["fact_id", "relation", "languages_located", "languages_with_neurons", "n_neurons_union",
                "n_likn", "n_likn_q", "likn"]
NEURON_COLUMNS = ["fact_id", "relation", "layer", "index", "n_languages", "languages", "in_all"]


def _by_fact(sets: Sets) -> dict[str, dict[str, set[Neuron]]]:
    out: dict[str, dict[str, set[Neuron]]] = {}
    for lang, facts in sets.items():
        for fid, ns in facts.items():
            out.setdefault(fid, {})[lang] = {(int(l), int(i)) for l, i in ns}
    return out


def sets_from_table(neurons) -> dict[str, dict[str, list[Neuron]]]:
    """`sets` from a run's neurons table (columns fact_id, language, layer, index; a recorded
    neurons.csv), for `by_layer` and `overlap` without the run. A fact located with no neuron has no
    row, so it is absent here; both functions count only non-empty sets, so they give the run's."""
    out: dict[str, dict[str, list[Neuron]]] = {}
    for fid, lang, layer, index in neurons[["fact_id", "language", "layer", "index"]].itertuples(index=False):
        out.setdefault(str(lang), {}).setdefault(str(fid), []).append((int(layer), int(index)))
    return out


def _q(q) -> int:
    """q of "found in at least q languages": an int >= 1."""
    try:
        return checks.integer(q, "q", low=1)
    except checks.ArgumentError as err:
        raise checks.ArgumentError(f"{err} (q counts the languages a neuron is found in)") from None


def fact_likn(per_language: Mapping[str, set[Neuron]]) -> set[Neuron]:
    """The neurons shared by every language with a non-empty set (empty below two such languages)."""
    found = [s for s in per_language.values() if s]
    return set.intersection(*found) if len(found) >= 2 else set()


def likn_tables(sets: Sets, relations: Mapping[str, str] | None = None, q: int = 2):
    """(facts, neurons) DataFrames. facts: a row per fact located in any language, with how many
    languages located it and found neurons, the union's size, its LIKN count (all k languages), the
    count found in at least `q` of them, and the LIKN as "layer:index" text; neurons: a row per
    (fact, neuron found in at least q languages), with how many languages and which, and whether in
    all k."""
    import pandas as pd

    q = _q(q)
    relations = relations or {}
    frows, nrows = [], []
    for fid, per in _by_fact(sets).items():
        with_n = [l for l, s in per.items() if s]
        counts = Counter(n for l in with_n for n in per[l])
        shared = fact_likn(per)
        wide = {n for n, c in counts.items() if c >= q and len(with_n) >= 2}
        rel = relations.get(fid)
        frows.append({"fact_id": fid, "relation": rel, "languages_located": len(per),
                      "languages_with_neurons": len(with_n), "n_neurons_union": len(counts),
                      "n_likn": len(shared), "n_likn_q": len(wide),
                      "likn": " ".join(f"{l}:{i}" for l, i in sorted(shared))})
        for n in sorted(wide):
            langs = [l for l in with_n if n in per[l]]
            nrows.append({"fact_id": fid, "relation": rel, "layer": n[0], "index": n[1], "n_languages": len(langs),
                          "languages": ",".join(langs), "in_all": n in shared})
    return pd.DataFrame(frows, columns=FACT_COLUMNS), pd.DataFrame(nrows, columns=NEURON_COLUMNS)


def by_layer(sets: Sets, n_layers: int, q: int = 2):
    """A row per layer: knowledge neurons (fact, neuron) found in one language only, in at least q,
    and in all of a fact's languages (its LIKN), summed over facts."""
    import pandas as pd

    q = _q(q)
    n_layers = checks.integer(n_layers, "n_layers", low=1)
    rows = {l: Counter() for l in range(n_layers)}
    for per in _by_fact(sets).values():
        with_n = [l for l, s in per.items() if s]
        counts = Counter(n for l in with_n for n in per[l])
        shared = fact_likn(per)
        for (layer, _), c in counts.items():
            rows[layer]["one_language"] += c == 1
            rows[layer][f"at_least_{q}"] += c >= q and len(with_n) >= 2
            rows[layer]["likn"] += (layer, _) in shared
    cols = ["one_language", f"at_least_{q}", "likn"]
    return pd.DataFrame([{"layer": l, **{c: int(rows[l][c]) for c in cols}} for l in range(n_layers)])


def overlap(sets: Sets, languages: Iterable[str] | None = None):
    """(jaccard, facts) language x language DataFrames: the mean Jaccard index |A & B| / |A | B| of a
    fact's neuron sets in the two languages, over the facts with neurons in both (NaN: none), and how
    many facts that is."""
    import pandas as pd

    langs = list(languages or sets)
    by_fact = _by_fact(sets)
    jac = pd.DataFrame(index=langs, columns=langs, dtype=float)
    n = pd.DataFrame(0, index=langs, columns=langs, dtype=int)
    for a in langs:
        for b in langs:
            vals = [len(p[a] & p[b]) / len(p[a] | p[b]) for p in by_fact.values() if p.get(a) and p.get(b)]
            jac.loc[a, b] = sum(vals) / len(vals) if vals else float("nan")
            n.loc[a, b] = len(vals)
    return jac, n
