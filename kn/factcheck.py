"""Fact-checking with degenerate knowledge neurons (Chen et al. 2024): the pure parts.

Per relation: a seeded 80/20 split of its facts (`split`); the relation's DKN set from the train
facts' degenerate pairs (`dkn_set`: neurons in pairs more often than 0.7 x the most frequent one,
the paper's rule); a statement is flagged false when its score (the mean attribution over the DKN
set) falls below a threshold fitted on the train statements (`fit_threshold`); `metrics` scores the
flags for detecting false statements with the standard definitions. The model-facing part (scores of
true and false statements) builds on these.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from . import checks

Neuron = tuple[int, int]


def split(fact_ids: Sequence[str], *, test: float = 0.2, seed: int = 0, key: str = "") -> tuple[list[str], list[str]]:
    """(train, test) ids: a seeded shuffle (keyed on `key`, e.g. the relation), the last
    round(test * n) (at least one when n >= 2) for test; order of `fact_ids` kept inside each part."""
    test = checks.number(test, "test", low=0.0, high=1.0)
    ids = list(dict.fromkeys(fact_ids))
    order = sorted(ids)
    random.Random(f"{seed}|split|{key}").shuffle(order)
    n_test = min(len(ids) - 1, max(1 if len(ids) >= 2 and test > 0 else 0, round(test * len(ids))))
    held = set(order[len(order) - n_test:]) if n_test > 0 else set()
    return [i for i in ids if i not in held], [i for i in ids if i in held]


def dkn_set(pairs_per_fact: Iterable[Iterable[tuple[Neuron, Neuron]]], ratio: float = 0.7) -> list[Neuron]:
    """Neurons counted in degenerate pairs (each fact's pairs once) more often than `ratio` x the
    largest count, sorted (the paper's rule)."""
    ratio = checks.number(ratio, "ratio", low=0.0, high=1.0)
    counts = Counter(n for pairs in pairs_per_fact for pr in {tuple(sorted(p)) for p in pairs} for n in pr)
    if not counts:
        return []
    top = max(counts.values())
    return sorted(n for n, c in counts.items() if c > ratio * top)


def fit_threshold(scores: Sequence[float], is_false: Sequence[bool]) -> float:
    """The threshold t (flag false when score < t) with the best accuracy on these statements; ties
    go to the midpoint between neighbouring scores, the smallest such t first."""
    s, y = np.asarray(scores, float), np.asarray(is_false, bool)
    if not len(s):
        raise checks.ArgumentError("fit_threshold needs at least one statement")
    u = np.unique(s)
    cands = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    acc = [((s < t) == y).mean() for t in cands]
    return float(cands[int(np.argmax(acc))])


def metrics(is_false: Sequence[bool], flagged: Sequence[bool], scores: Sequence[float] | None = None) -> dict:
    """Detecting false statements: precision, recall and F1 of the `flagged` ones, accuracy, and (given
    `scores`, lower = more likely false) ROC AUC. NaN where a ratio has nothing to divide by."""
    y, f = np.asarray(is_false, bool), np.asarray(flagged, bool)
    tp, fp, fn = int((y & f).sum()), int((~y & f).sum()), int((y & ~f).sum())
    prec = tp / (tp + fp) if tp + fp else math.nan
    rec = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * prec * rec / (prec + rec) if tp else (0.0 if tp + fp + fn else math.nan)
    out = {"n": len(y), "precision": prec, "recall": rec, "f1": f1,
           "accuracy": float((y == f).mean()) if len(y) else math.nan}
    if scores is not None:
        out["roc_auc"] = roc_auc(y, -np.asarray(scores, float))
    return out


def roc_auc(positive: Sequence[bool], score: Sequence[float]) -> float:
    """P(score of a random positive > that of a random negative), ties counted half (Mann-Whitney)."""
    y, s = np.asarray(positive, bool), np.asarray(score, float)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))
