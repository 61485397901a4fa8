"""Fact-checking's pure parts against hand-computed values and brute force."""
import itertools
import math
import random

import numpy as np
import pytest

from kn import factcheck as F


def test_split_is_seeded_and_eighty_twenty():
    ids = [f"f{i}" for i in range(10)]
    train, test = F.split(ids, seed=1, key="P36")
    assert len(test) == 2 and len(train) == 8 and set(train) | set(test) == set(ids) and not set(train) & set(test)
    assert F.split(list(reversed(ids)), seed=1, key="P36")[1] == list(reversed(test))  # same facts, input order kept
    assert F.split(ids, seed=2, key="P36")[1] != test or F.split(ids, seed=3, key="P36")[1] != test
    assert F.split(["a", "b"], seed=0)[1] and F.split(["a"], seed=0) == (["a"], [])


def test_dkn_set_by_hand():
    a, b, c, d = (1, 1), (2, 2), (3, 3), (4, 4)
    facts = [[(a, b), (b, a), (a, c)], [(a, b)], [(a, d)], [(b, c)]]
    # counts (each fact's pairs once): a 4, b 3, c 2, d 1; > 0.7 * 4 = 2.8: a and b
    assert F.dkn_set(facts) == [a, b]
    assert F.dkn_set(facts, ratio=0.4) == [a, b, c] and F.dkn_set([]) == []


def test_fit_threshold_is_the_best_on_train():
    rng = random.Random(0)
    s = [rng.random() for _ in range(30)]
    y = [x < 0.4 if rng.random() < 0.85 else x >= 0.4 for x in s]
    t = F.fit_threshold(s, y)
    acc = lambda t: np.mean([(x < t) == f for x, f in zip(s, y)])
    assert all(acc(t) >= acc(u) for u in np.linspace(-0.5, 1.5, 401))  # brute force over thresholds
    assert F.fit_threshold([0.1, 0.9], [True, False]) == pytest.approx(0.5)


def test_metrics_by_hand():
    y = [True, True, False, False, True]
    f = [True, False, True, False, True]
    m = F.metrics(y, f, scores=[0.1, 0.6, 0.3, 0.8, 0.2])
    # tp 2, fp 1, fn 1
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(3 / 5)
    # AUC by brute force over (false, true) statement pairs: lower score = more likely false
    pos, neg = [0.1, 0.6, 0.2], [0.3, 0.8]
    auc = np.mean([(p < q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg)])
    assert m["roc_auc"] == pytest.approx(auc)
    assert math.isnan(F.metrics([False], [False])["precision"]) and F.metrics([True], [False])["f1"] == 0.0


def test_reference_metrics_by_hand():
    # 4 true statements (3 accepted), 3 false (1 accepted)
    is_false = [False] * 4 + [True] * 3
    flagged = [False, False, False, True, True, True, False]
    m = F.metrics_as_reference(is_false, flagged)
    assert m["ref_precision"] == pytest.approx(3 / 4) and m["ref_recall"] == pytest.approx(3 / 4)
    assert m["ref_f1"] == pytest.approx(3 / 4)
    std = F.metrics(is_false, flagged)  # standard: 2 of 3 flagged are false; 2 of 3 false flagged
    assert std["precision"] == pytest.approx(2 / 3) and std["recall"] == pytest.approx(2 / 3)


def test_logistic_maximises_the_penalised_likelihood():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = (x + rng.normal(scale=1.0, size=40)) > 0
    clf = F.Logistic(l2=1.0).fit(x[:, None], y)
    z = (x - x.mean()) / x.std()

    def objective(b0, b1):  # the penalised log-likelihood, written from the definition
        p = 1 / (1 + np.exp(-(b0 + b1 * z)))
        return np.sum(y * np.log(p) + (~y) * np.log(1 - p)) - 0.5 * b1 ** 2

    grid = np.linspace(-3, 3, 601)
    best = max(((objective(a, b), a, b) for a in grid[::3] for b in grid), key=lambda t: t[0])
    assert abs(clf.w[0] - best[1]) < 0.03 and abs(clf.w[1] - best[2]) < 0.03
    assert ((clf.proba(x[:, None]) > 0.5) == (clf.w[0] + clf.w[1] * z > 0)).all()


def _statements(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=["fact_id", "relation", "split", "kind", "object", "p", "rank", "dkn_mean",
                                       "kn_mean", "dkn", "random"])


def _row(fid, rel, part, kind, dkn, p, rank, kn_mean=0.0, rand=(0.0, 0.0)):
    return [fid, rel, part, kind, "o", p, rank, float(np.mean(dkn)), kn_mean, list(dkn), list(rand)]


def test_detectors_by_hand():
    rows = []
    for i in range(6):  # train: true statements score 1.0 + i/10 on the DKN, false ones 0.1
        rows += [_row(f"r/{i}", "r", "train", "true", [1.0 + i / 10, 1.0], 0.5, 0, rand=(0.3, 0.1)),
                 _row(f"r/{i}", "r", "train", "false", [0.1, 0.1], 0.1, 3, rand=(0.3, 0.2))]
    # test fact t0 scores as its train peers; t1's false statement looks true on the DKN but not on P
    rows += [_row("r/t0", "r", "test", "true", [1.2, 1.0], 0.4, 0), _row("r/t0", "r", "test", "false", [0.0, 0.2], 0.2, 1),
             _row("r/t1", "r", "test", "true", [0.9, 0.9], 0.3, 2), _row("r/t1", "r", "test", "false", [2.0, 2.0], 0.2, 0)]
    rows += [_row("r/t2", "r", "test", "true", [1.0, 1.0], 0.3, 0)]  # no wrong object: left out
    d = F.decisions(_statements(rows), fixed=0.5)
    got = {m: g.set_index(["fact_id", "kind"]).flagged.to_dict() for m, g in d[d.draw == 0].groupby("method")}
    assert set(got) == {"dkn", "dkn-fixed", "dkn-classifier", "all-kn", "random", "argmax", "p-pair", "log-p"}
    assert got["dkn"] == {("r/t0", "true"): False, ("r/t0", "false"): True, ("r/t1", "true"): False,
                          ("r/t1", "false"): False}
    assert got["dkn-fixed"] == got["dkn"]  # 0.5 separates these too
    assert got["argmax"] == {("r/t0", "true"): False, ("r/t0", "false"): True, ("r/t1", "true"): True,
                             ("r/t1", "false"): False}
    assert got["p-pair"] == {("r/t0", "true"): False, ("r/t0", "false"): True, ("r/t1", "true"): False,
                             ("r/t1", "false"): True}
    assert d[d.method == "random"].draw.nunique() == 2
    e = F.evaluate(d).set_index(["method", "relation"])
    assert e.loc[("p-pair", "all")].f1 == 1.0 and e.loc[("p-pair", "r")].n == 4
    # dkn: flags t0/false only: precision 1, recall 1/2
    assert e.loc[("dkn", "r")].precision == 1.0 and e.loc[("dkn", "r")].recall == 0.5
    # AUC: the false t0 (0.1) below both true ones (1.1, 0.9), the false t1 (2.0) above both: 2 of 4 pairs
    assert e.loc[("dkn", "r")].roc_auc == pytest.approx(0.5)
    assert e.loc[("random", "all")].draws == 2


def test_roc_curve_area_is_the_mann_whitney_auc():
    rng = np.random.default_rng(3)
    y = rng.random(60) < 0.4
    s = np.round(rng.normal(size=60) + y, 1)  # rounded: ties
    fpr, tpr = F.roc_curve(y, s)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]])
    assert area == pytest.approx(brute) and F.roc_auc(y, s) == pytest.approx(brute)


def summary_frame():
    """An `evaluate` summary by hand: dkn, argmax and p-pair over relations r1, r2 and "all"."""
    import pandas as pd

    rows = []
    for method, f1s in (("argmax", (0.5, 0.25, 0.4)), ("dkn", (0.8, 0.6, 0.7)), ("p-pair", (0.3, 0.1, 0.2))):
        for rel, f1 in zip(("r1", "r2", "all"), f1s):
            rows.append({"method": method, "relation": rel, "n": 10 if rel == "all" else 5, "draws": 1,
                         "f1": f1, "accuracy": f1 / 2, "roc_auc": 0.12345})
    return pd.DataFrame(rows, columns=F.SUMMARY_COLUMNS)


def test_f1_by_relation_orders_methods_as_methods_and_puts_all_last():
    t = F.f1_by_relation(summary_frame().iloc[::-1])
    assert list(t.index) == ["dkn", "argmax", "p-pair"]
    assert list(t.columns) == ["r1", "r2", "all"]
    assert t.loc["argmax", "r2"] == 0.25 and t.loc["dkn", "all"] == 0.7


def test_overall_and_recorded_overall_pool_over_relations():
    o = F.overall(summary_frame())
    assert list(o.index) == ["dkn", "argmax", "p-pair"]
    assert o.columns[0] == "what" and "relation" not in o.columns
    assert o.loc["argmax", "what"] == F.METHODS["argmax"] and o.loc["dkn", "roc_auc"] == 0.123
    r = F.recorded_overall({"m1": summary_frame(), "m2": summary_frame()})
    assert list(r.columns) == [(m, c) for m in ("m1", "m2") for c in ("f1", "accuracy", "roc_auc")]
    assert r.loc["p-pair", ("m2", "accuracy")] == 0.1


def test_against_claim_sets_dkns_f1_against_argmaxs():
    s = summary_frame()
    assert F.against_claim(s) == ("DKN F1 0.70, higher than the argmax baseline's 0.40 (p-pair 0.20), over 10 test "
                                  "statements.")
    lower = s.assign(f1=s.f1.where(~((s.method == "dkn") & (s.relation == "all")), 0.1))
    assert "DKN F1 0.10, not higher than the argmax baseline's 0.40" in F.against_claim(lower)
    assert F.against_claim(s[s.method != "dkn"]).startswith("No relation of this slice has a DKN set")


def test_dkn_mean_and_roc_figures():
    import pandas as pd

    from kn.figures import dkn_mean_figure, roc_figure

    st = pd.DataFrame({"relation": ["r1", "r1", "r2", "r2"], "kind": ["true", "false"] * 2,
                       "dkn_mean": [0.3, 0.1, 0.2, 0.05]})
    (ax,) = dkn_mean_figure(st).axes
    assert len(ax.collections) == 4  # a point cloud per relation and kind
    assert ax.get_xlabel() == "mean attribution over the relation's DKN set"
    assert len(dkn_mean_figure(st.assign(dkn_mean=float("nan"))).axes[0].collections) == 0
    decided = pd.DataFrame({"method": ["a"] * 4 + ["b"] * 4, "draw": 0, "is_false": [True, False, True, False] * 2,
                            "score": [0.1, 0.9, 0.2, 0.8, 0.9, 0.1, 0.8, 0.2]})
    (ax,) = roc_figure(decided).axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (AUC 1.00)", "b (AUC 0.00)"]
    assert len(ax.lines) == 3  # two curves and the diagonal
