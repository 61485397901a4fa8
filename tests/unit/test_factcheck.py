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
