"""Quadrature rules as data: points on [0, 1], weights summing to 1, the polynomials each integrates exactly."""
import pytest
import torch

from kn.quadrature import RULES, quadrature


def integrate(rule, m, degree):
    q = quadrature(rule, m)
    return float((q.weights * q.points ** degree).sum())


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("m", [2, 3, 8, 20])
def test_points_on_the_unit_interval_and_weights_sum_to_one(rule, m):
    q = quadrature(rule, m)
    assert q.points.shape == q.weights.shape == (m,) and q.points.dtype == torch.float64
    assert float(q.points.min()) >= 0 and float(q.points.max()) <= 1
    assert (q.weights > 0).all()
    assert float(q.weights.sum()) == pytest.approx(1, abs=1e-14)


# the highest degree each rule integrates exactly on [0, 1] with m points (integral of t^d is 1 / (d + 1))
EXACT = {"riemann_left": lambda m: 0, "linspace": lambda m: 1, "riemann_trapezoid": lambda m: 1,
         "gauss_legendre": lambda m: 2 * m - 1}


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("m", [2, 3, 5, 8])
def test_exact_up_to_its_degree_and_not_beyond(rule, m):
    top = EXACT[rule](m)
    for d in range(top + 1):
        assert integrate(rule, m, d) == pytest.approx(1 / (d + 1), abs=1e-13), (rule, m, d)
    assert abs(integrate(rule, m, top + 1) - 1 / (top + 2)) > 1e-11, (rule, m, top + 1)  # GL, m = 8: 3.6e-10


def test_paper_and_eleutherai_points():
    # the float32 points the kernels use are the ones the paper (k / m) and the package (linspace) use
    for m in (1, 7, 20, 64):
        assert torch.equal(quadrature("riemann_left", m).points.float(), torch.arange(m, dtype=torch.float32) / m)
        torch.testing.assert_close(quadrature("linspace", m).points.float(), torch.linspace(0, 1, m), rtol=0, atol=1e-7)
        assert torch.equal(quadrature("riemann_left", m).weights.float(), torch.full((m,), 1 / m))


def test_bad_rule_and_steps():
    with pytest.raises(ValueError, match="gauss_legendre"):
        quadrature("simpson", 4)
    with pytest.raises(ValueError, match="steps"):
        quadrature("riemann_left", 0)
    with pytest.raises(ValueError, match=">= 2"):
        quadrature("riemann_trapezoid", 1)


def test_rule_table_lists_each_rules_points_and_weights():
    from kn.quadrature import rule_table

    t = rule_table(2)
    assert t.rule.tolist() == list(RULES)
    row = t.set_index("rule").loc["riemann_left"]
    assert row.points == [0.0, 0.5] and row.weights == [0.5, 0.5] and row["sum of weights"] == pytest.approx(1)
    gl = t.set_index("rule").loc["gauss_legendre", "points"]
    assert gl == pytest.approx([0.2113, 0.7887])  # (1 -+ 1/sqrt(3)) / 2, rounded to 4 decimals
