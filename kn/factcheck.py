"""Fact-checking with degenerate knowledge neurons (Chen et al. 2024): the pure parts.

Per relation: a seeded 80/20 split of its facts (`split`); the relation's DKN set from the train
facts' degenerate pairs (`dkn_set`: neurons in pairs more often than 0.7 x the most frequent one,
the paper's rule); a statement is flagged false when its score (the mean attribution over the DKN
set) falls below a threshold fitted on the train statements (`fit_threshold`); `metrics` scores the
flags for detecting false statements with the standard definitions (`metrics_as_reference`: the
reference code's, labelled). `decisions` fits every detector of `METHODS` (the paper's, kn's
classifier, and the baselines) on a statements table (`res.statements` of a run with the phase
"statements", the model-facing part) and `evaluate` scores them per relation and overall;
`f1_by_relation`, `overall`, `recorded_overall` and `against_claim` lay out its summaries.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from . import checks
from .neuron import Neuron


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


def metrics_as_reference(is_false: Sequence[bool], flagged: Sequence[bool]) -> dict:
    """Precision, recall and F1 as the reference code computes them (labelled so wherever shown; kept
    for comparison with the paper's numbers only). It counts a true statement judged true as a "true
    positive", a true statement judged false as a "false positive" and a false statement judged true
    as a "false negative": its precision is the share of true statements accepted, its recall the
    accepted true statements over those plus the accepted false ones. Accuracy is the standard one."""
    y, f = np.asarray(is_false, bool), np.asarray(flagged, bool)
    ct, nt = int((~y & ~f).sum()), int((~y).sum())  # true statements judged true, all true statements
    ff = int((y & ~f).sum())  # false statements judged true
    prec = ct / nt if nt else math.nan
    rec = ct / (ct + ff) if ct + ff else math.nan
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else math.nan
    return {"ref_precision": prec, "ref_recall": rec, "ref_f1": f1}


class Logistic:
    """L2-regularised logistic regression (Newton's method) on standardised features: kn's classifier
    over a statement's DKN attributions. fit(X [n, d], y [n] bool); proba(X) -> P(y) [n]."""

    def __init__(self, l2: float = 1.0, iterations: int = 50):
        self.l2 = checks.number(l2, "l2", low=0.0)
        if self.l2 <= 0:  # separable data (few statements, many neurons: common) has no unpenalised fit
            raise checks.ArgumentError(f"l2 must be > 0, got {l2!r}: without a penalty the fit has no solution "
                                       "when the classes are separable; pass a small l2 such as 1e-3")
        self.iterations = checks.integer(iterations, "iterations", low=1)

    def fit(self, X, y) -> "Logistic":
        X, y = np.asarray(X, float), np.asarray(y, float)
        if X.ndim != 2 or y.shape != (len(X),):
            raise checks.ArgumentError(f"fit takes X [n, d] and y [n], got X {list(X.shape)} and y {list(y.shape)}")
        if not np.isfinite(X).all():
            raise checks.ArgumentError(f"X holds {int((~np.isfinite(X)).sum())} non-finite value(s); pass finite "
                                       "features")
        self.mean, self.scale = X.mean(0), X.std(0) + 1e-12
        Z = np.hstack([np.ones((len(X), 1)), (X - self.mean) / self.scale])
        w = np.zeros(Z.shape[1])
        reg = np.full(Z.shape[1], self.l2)
        reg[0] = 1e-8  # the intercept is not shrunk
        for _ in range(self.iterations):
            p = 1 / (1 + np.exp(-Z @ w))
            grad = Z.T @ (p - y) + reg * w
            hess = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(reg)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-10:
                break
        self.w = w
        return self

    def proba(self, X) -> np.ndarray:
        Z = (np.asarray(X, float) - self.mean) / self.scale
        return 1 / (1 + np.exp(-(self.w[0] + Z @ self.w[1:])))


# -- detectors over a statements table (a run's `statements`, `kn.runs.phases.statements`) -----------
METHODS = {  # name -> what it is, as the tables and plots label it
    "dkn": "DKN score, threshold fitted on train (the paper's method)",
    "dkn-fixed": "DKN score, fixed threshold 1e-6 (as in the reference code)",
    "dkn-classifier": "logistic regression over the DKN attributions, fitted on train (kn)",
    "all-kn": "mean attribution over all the train facts' knowledge neurons, threshold fitted on train",
    "random": "mean attribution over random neuron sets of the DKN set's size, threshold fitted on train",
    "argmax": "the model's top-1 first token is the object (the paper's baseline)",
    "p-pair": "P(object) above the other statement's of the same fact",
    "log-p": "log P(object), threshold fitted on train",
}
DECISION_COLUMNS = ["method", "draw", "relation", "fact_id", "kind", "is_false", "score", "flagged"]


def _fitted(train_score, train_false, test_score) -> tuple[np.ndarray, np.ndarray]:
    """(score, flagged) of test statements by a threshold fitted on the train ones (NaN scores: unflagged,
    left out of the fit)."""
    ok = ~np.isnan(train_score)
    if not ok.any():
        return test_score, np.zeros(len(test_score), bool)
    t = fit_threshold(train_score[ok], train_false[ok])
    return test_score, test_score < t


def decisions(statements, *, fixed: float = 1e-6, l2: float = 1.0):
    """A row per (method, draw, test statement) (`DECISION_COLUMNS`): each detector of `METHODS`
    fitted per relation on its train statements; score: higher = judged more likely true; flagged:
    judged false. Only facts with both statements count. Statements without a DKN set (its relation has no degenerate pairs) get no DKN
    rows."""
    import pandas as pd

    rows = []
    both = statements.groupby("fact_id").kind.transform("nunique") == 2  # facts with a wrong object
    for rel, g in statements[both].groupby("relation", sort=False):
        tr, te = g[g.split == "train"], g[g.split == "test"]
        if not len(te):
            continue
        ytr, yte = (tr.kind == "false").to_numpy(), (te.kind == "false").to_numpy()
        base = {"relation": rel, "fact_id": te.fact_id.to_numpy(), "kind": te.kind.to_numpy(), "is_false": yte}

        def add(method, score, flagged, draw=0):
            rows.append(pd.DataFrame({"method": method, "draw": draw, **base, "score": score, "flagged": flagged}))

        has_dkn = len(te.dkn.iloc[0]) > 0
        if has_dkn:
            add("dkn", *_fitted(tr.dkn_mean.to_numpy(), ytr, te.dkn_mean.to_numpy()))
            add("dkn-fixed", te.dkn_mean.to_numpy(), te.dkn_mean.to_numpy() < fixed)
            if ytr.any() and (~ytr).any():
                clf = Logistic(l2).fit(np.stack(tr.dkn.to_list()), ytr)
                pf = clf.proba(np.stack(te.dkn.to_list()))
                add("dkn-classifier", 1 - pf, pf > 0.5)
            for d in range(len(te.random.iloc[0])):
                add("random", *_fitted(tr.random.str[d].to_numpy(), ytr, te.random.str[d].to_numpy()), draw=d)
        if te.kn_mean.notna().all():
            add("all-kn", *_fitted(tr.kn_mean.to_numpy(), ytr, te.kn_mean.to_numpy()))
        add("argmax", -te["rank"].to_numpy(), te["rank"].to_numpy() > 0)
        other = te.groupby("fact_id").p.transform(lambda p: p.sum() - p if len(p) == 2 else np.nan).to_numpy()
        add("p-pair", te.p.to_numpy() - other, te.p.to_numpy() < other)
        add("log-p", *_fitted(np.log(tr.p.to_numpy()), ytr, np.log(te.p.to_numpy())))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=DECISION_COLUMNS)


SUMMARY_COLUMNS = ["method", "relation", "n", "draws", "precision", "recall", "f1", "accuracy", "roc_auc",
                   "ref_precision", "ref_recall", "ref_f1"]


def evaluate(decided):
    """Metrics of detecting false statements per (method, relation) and pooled over relations
    (relation "all"; each relation keeps its own fitted threshold): `metrics` (standard) and
    `metrics_as_reference` (labelled ref_*). Methods with several draws (random sets): the mean
    over draws."""
    import pandas as pd

    def one(g):
        m = metrics(g.is_false.to_numpy(bool), g.flagged.to_numpy(bool), g.score.to_numpy(float))
        return m | metrics_as_reference(g.is_false.to_numpy(bool), g.flagged.to_numpy(bool))

    rows = []
    for method, gm in decided.groupby("method", sort=False):
        for rel, g in list(gm.groupby("relation", sort=False)) + [("all", gm)]:
            per = [one(gd) for _, gd in g.groupby("draw")]
            row = {k: float(np.nanmean([p[k] for p in per])) if not all(math.isnan(p[k]) for p in per)
                   else math.nan for k in per[0] if k != "n"}
            rows.append({"method": method, "relation": rel, "n": per[0]["n"], "draws": len(per), **row})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def recorded_summary(rec, *, fixed: float = 1e-6):
    """`evaluate` of a recording's statements (`kn record` of a run with the "statements" phase)."""
    return evaluate(decisions(rec["statements"], fixed=fixed))


def roc_curve(positive: Sequence[bool], score: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) of `score >= t` over every threshold t, from (0, 0)
    to (1, 1); tied scores move both rates at once (the area under it is `roc_auc`)."""
    y, s = np.asarray(positive, bool), np.asarray(score, float)
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last = np.r_[np.diff(s) != 0, True]  # the last of each run of tied scores
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def f1_by_relation(summary):
    """An `evaluate` summary's F1 as a methods (rows, in `METHODS` order) x relations table, the pooled
    "all" last, rounded to 3 decimals."""
    t = summary.pivot(index="method", columns="relation", values="f1")
    order = [m for m in METHODS if m in t.index]
    return t[[c for c in t.columns if c != "all"] + ["all"]].reindex(order).round(3)


def overall(summary):
    """An `evaluate` summary's rows pooled over relations, indexed by method in `METHODS` order, with
    what each method is (column "what", first), rounded to 3 decimals."""
    t = summary[summary.relation == "all"].set_index("method").reindex(
        [m for m in METHODS if m in set(summary.method)])
    t.insert(0, "what", [METHODS[m] for m in t.index])
    return t.drop(columns="relation").round(3)


def recorded_overall(summaries):
    """{model: `evaluate` summary} side by side: per method (rows), each model's pooled F1, accuracy and
    ROC AUC (columns model, metric), rounded to 3 decimals."""
    import pandas as pd

    return pd.concat({m: s[s.relation == "all"].set_index("method")[["f1", "accuracy", "roc_auc"]]
                      for m, s in summaries.items()}, axis=1).round(3)


def against_claim(summary) -> str:
    """One sentence on an `evaluate` summary against Chen et al.'s claim (DKN beats the model's argmax
    in F1): DKN's pooled F1 against argmax's, the other DKN-based and control methods' beside them."""
    g = summary[summary.relation == "all"].set_index("method").f1
    if "dkn" not in g or np.isnan(g.get("dkn", np.nan)):
        return "No relation of this slice has a DKN set with test statements: nothing to compare."
    verdict = "higher than" if g["dkn"] > g["argmax"] else "not higher than"
    extra = "; ".join(f"{m} {g[m]:.2f}" for m in ("dkn-classifier", "p-pair", "random", "all-kn") if m in g)
    n = int(summary[(summary.relation == "all") & (summary.method == "dkn")].n.iloc[0])
    return (f"DKN F1 {g['dkn']:.2f}, {verdict} the argmax baseline's {g['argmax']:.2f} ({extra}), over "
            f"{n} test statements.")
