"""kn.calibrate: the cheapest quadrature setting within a tolerance, checked against the plain
definition (`reference=True`, kn/ig/reference.py) rather than the fast path it uses."""
import pytest

import kn
from kn.calibrate import PAPER, calibrate
from kn.testing import tiny_lm

QUERIES = [("the capital of France is", "Paris"), ("the capital of Germany is", "Berlin")]
MASKED = [("the capital of France is [MASK] .", "Paris")]
STEPS = (2, 3, 4, 8, 20)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


def _worst(lm, queries, rule, m, exact, **kw):
    """The definition's worst relative error (float32 scores: errors below ~1e-6 are rounding), every
    score from the reference path."""
    out = 0.0
    for p, a in queries:
        truth = kn.attribute(lm, p, a, rule="gauss_legendre", steps=exact, reference=True, **kw).double()
        got = kn.attribute(lm, p, a, rule=rule, steps=m, reference=True, **kw).double()
        out = max(out, float((got - truth).abs().max() / truth.abs().max()))
    return out


@pytest.mark.parametrize("family,queries", [("GPT-2", QUERIES), ("BERT", MASKED)])
def test_the_cheapest_setting_within_the_papers_error(family, queries):
    lm = tiny_lm(family)
    cal = calibrate(lm, queries, steps=STEPS, exact=32)
    paper = _worst(lm, queries, *PAPER, 32)
    assert cal.tolerance == pytest.approx(paper, rel=1e-3, abs=1e-6)
    grid = {(r, m): e for r, m, e in cal.grid}
    assert len(grid) == 4 * len(STEPS)  # every rule at every step count (all >= 2)
    for (r, m), e in list(grid.items())[::3]:  # a third of the grid, recomputed from the definition
        assert e == pytest.approx(_worst(lm, queries, r, m, 32), rel=1e-3, abs=1e-6), (r, m)
    assert cal.error <= cal.tolerance and grid[(cal.rule, cal.steps)] == cal.error
    assert all(e > cal.tolerance for (r, m), e in grid.items() if m < cal.steps)
    assert cal.steps < 20  # tiny random models are smooth: fewer points than the paper's do as well


def test_settings_are_carried_and_an_impossible_tolerance_falls_back_to_the_paper():
    lm = tiny_lm("GPT-2")
    cal = calibrate(lm, QUERIES[:1], kn.IG(baseline="amig"), steps=(2, 4), exact=16)
    assert cal.settings.baseline == "amig" and cal.settings.rule in kn.RULES
    want = _worst(lm, QUERIES[:1], *PAPER, 16, baseline="amig")
    assert cal.tolerance == pytest.approx(want, rel=1e-3, abs=1e-6)
    none = calibrate(lm, QUERIES[:1], tolerance=0.0, rules=["riemann_left"], steps=(2, 4), exact=16)
    assert (none.rule, none.steps) == PAPER and none.error > 0


@pytest.mark.parametrize("kwargs,match", [
    (dict(queries=[]), "non-empty list"), (dict(queries=[("p",)]), "string pairs"),
    (dict(rules=["simpson"]), "unknown rule"), (dict(steps=(0, 2)), "positive integers"),
    (dict(exact=1), "exact must be"), (dict(tolerance=-1.0), "tolerance must be"),
    (dict(settings=kn.Activation()), "must be a kn.IG"),
])
def test_bad_inputs_say_what_was_wrong(kwargs, match):
    lm = tiny_lm("GPT-2")
    args = dict(queries=QUERIES[:1]) | kwargs
    q = args.pop("queries")
    with pytest.raises((ValueError, TypeError), match=match):
        calibrate(lm, q, **args)
