"""kn.calibrate: the cheapest quadrature setting no less accurate than a reference setting on every
prompt, checked against the plain definition (`reference=True`, kn/ig/reference.py) rather than the
fast path it uses; and its search on planted error tables."""
import pytest

import kn
from kn.calibration import PAPER, calibrate, search
from kn.testing import tiny_lm

QUERIES = [("the capital of France is", "Paris"), ("the capital of Germany is", "Berlin")]
MASKED = [("the capital of France is [MASK] .", "Paris")]
STEPS = (2, 3, 4, 8, 20)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


def _errors(lm, queries, rule, m, exact, **kw):
    """The definition's relative error per query (float32 scores: errors below ~1e-6 are rounding),
    every score from the reference path."""
    out = []
    for p, a in queries:
        truth = kn.attribute(lm, p, a, rule="gauss_legendre", steps=exact, reference=True, **kw).double()
        got = kn.attribute(lm, p, a, rule=rule, steps=m, reference=True, **kw).double()
        out.append(float((got - truth).abs().max() / truth.abs().max()))
    return out


@pytest.mark.parametrize("family,queries", [("GPT-2", QUERIES), ("BERT", MASKED)])
def test_the_cheapest_setting_no_worse_than_the_paper_on_every_prompt(family, queries):
    lm = tiny_lm(family)
    cal = calibrate(lm, queries, steps=STEPS, exact=32)
    assert cal.against == PAPER
    assert cal.bounds == pytest.approx(_errors(lm, queries, *PAPER, 32), rel=1e-3, abs=1e-6)
    grid = {(r, m): e for r, m, e in cal.grid}
    for (r, m), e in list(grid.items())[::3]:  # a third of the measured grid, from the definition
        assert e == pytest.approx(_errors(lm, queries, r, m, 32), rel=1e-3, abs=1e-6), (r, m)
    assert all(e <= b for e, b in zip(cal.errors, cal.bounds)) and grid[(cal.rule, cal.steps)] == cal.errors
    # every cheaper candidate was measured (every rule with an m-point form) and fails on some prompt
    cheaper = [(r, m) for r in kn.RULES for m in STEPS if m < cal.steps and not (r == "riemann_trapezoid" and m < 2)]
    assert set(cheaper) <= set(grid)
    assert all(any(e > b for e, b in zip(grid[c], cal.bounds)) for c in cheaper)
    assert all(m <= cal.steps for _, m in grid)  # nothing dearer than the choice was measured
    assert cal.steps < 20  # tiny random models are smooth: fewer points than the paper's do as well


def test_a_tolerance_or_another_reference_sets_the_bounds():
    lm = tiny_lm("GPT-2")
    lin = calibrate(lm, QUERIES, against=("linspace", 20), steps=(2, 4, 8), exact=16)
    assert lin.against == ("linspace", 20)
    assert lin.bounds == pytest.approx(_errors(lm, QUERIES, "linspace", 20, 16), rel=1e-3, abs=1e-6)
    tol = calibrate(lm, QUERIES, tolerance=1e-2, steps=(2, 4, 8), exact=16)
    assert tol.against is None and tol.bounds == (1e-2, 1e-2) and tol.error <= 1e-2


def test_settings_are_carried_and_an_impossible_tolerance_falls_back_to_the_reference():
    lm = tiny_lm("GPT-2")
    cal = calibrate(lm, QUERIES[:1], kn.IG(baseline="amig"), steps=(2, 4), exact=16)
    assert cal.settings.baseline == "amig" and cal.settings.rule in kn.RULES
    assert cal.bounds == pytest.approx(_errors(lm, QUERIES[:1], *PAPER, 16, baseline="amig"), rel=1e-3, abs=1e-6)
    none = calibrate(lm, QUERIES[:1], tolerance=0.0, rules=["riemann_left"], steps=(2, 4), exact=16)
    assert (none.rule, none.steps) == PAPER and none.error > 0


def test_search_takes_the_fewest_points_then_the_smallest_worst_error_on_planted_tables():
    table = {("a", 2): (0.5, 0.01), ("b", 2): (0.02, 0.3),  # each fails one prompt at 2 points
             ("a", 4): (0.05, 0.05), ("b", 4): (0.08, 0.01),  # both qualify at 4: a's worst is smaller
             ("a", 8): (0.0, 0.0), ("b", 8): (0.0, 0.0)}
    asked = []

    def measure(r, m):
        asked.append((r, m))
        return table[r, m]

    chosen, grid = search(measure, [("a", 8), ("b", 8), ("a", 2), ("a", 4), ("b", 2), ("b", 4)], bounds=(0.1, 0.1))
    assert chosen == ("a", 4, (0.05, 0.05))
    assert sorted(asked[:2]) == [("a", 2), ("b", 2)] and sorted(asked[2:]) == [("a", 4), ("b", 4)]  # cheapest first, nothing past the choice
    assert [c[:2] for c in grid] == asked
    assert search(measure, [("a", 2)], bounds=(0.1, 0.1))[0] is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(queries=[]), "non-empty list"), (dict(queries=[("p",)]), "string pairs"),
    (dict(rules=["simpson"]), "unknown rule"), (dict(steps=(0, 2)), "steps must be an integer or a list of integers between 1"),
    (dict(exact=1), "exact must be"), (dict(tolerance=-1.0), "tolerance must be"),
    (dict(settings=kn.Activation()), "must be a kn.IG"), (dict(against=("simpson", 4)), "against must be"),
    (dict(against=("riemann_trapezoid", 1)), "against must be"),
])
def test_bad_inputs_say_what_was_wrong(kwargs, match):
    lm = tiny_lm("GPT-2")
    args = dict(queries=QUERIES[:1]) | kwargs
    q = args.pop("queries")
    with pytest.raises((ValueError, TypeError), match=match):
        calibrate(lm, q, **args)


def test_cli_calibrate_records_what_kn_calibrate_picks(tmp_path, monkeypatch, capsys):
    """`kn calibrate`: the queries are each selected fact's first prompt per language, the pick and
    every candidate's errors are kn.calibrate's on them, and --record keeps both with the command."""
    import pandas as pd

    from kn import cli, recording
    from kn.calibration import queries_of

    from test_run import tiny_facts

    lm = tiny_lm("GPT-2")
    monkeypatch.setattr(cli, "_load", lambda args: lm)
    monkeypatch.setattr(cli, "_facts", lambda args, languages: tiny_facts())
    argv = ["calibrate", "--relations", "capital", "--facts-per-relation", "2", "--exact", "16", "--record",
            str(tmp_path / "rec")]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    rec = recording.read(tmp_path / "rec")
    from kn.data import select_facts

    queries = queries_of(lm, select_facts(tiny_facts(), relations=["capital"], per_relation=2, language="en"), ["en"])
    want = calibrate(lm, queries, exact=16)
    chosen = rec["chosen"].iloc[0]
    assert (chosen.rule, int(chosen.steps)) == (want.rule, want.steps) and f"{want.rule} with {want.steps}" in printed
    c = rec["candidates"]
    assert len(c) == len(want.grid) * len(queries) and c.prompt.tolist()[: len(queries)] == [p for p, _ in queries]
    got = {(r, int(m), int(j)): e for r, m, j, e in zip(c.rule, c.steps, c["query"], c.error)}
    for r, m, errs in want.grid:
        assert [got[(r, m, j)] for j in range(len(queries))] == pytest.approx(list(errs), rel=1e-5, abs=1e-9)
    assert rec.provenance["command"] == "kn " + " ".join(argv) and rec.provenance["settings"]["exact"] == 16
    assert isinstance(c, pd.DataFrame) and c.chosen.sum() == len(queries)
    assert cli.main(["calibrate", "--against", "simpson:20"]) == 2
    assert "--against must be RULE:STEPS" in capsys.readouterr().err


def test_timed_against_exact_is_the_relative_error_and_coarse_sets_of_each_setting():
    from kn.calibration import timed_against_exact
    from kn.localization import coarse

    lm = tiny_lm("GPT-2")
    p, a = QUERIES[0]
    t = timed_against_exact(lm, p, a, [("riemann_left", 2), ("gauss_legendre", 16)], exact=16)
    assert t.setting.tolist() == ["riemann_left, 2", "gauss_legendre, 16"]
    exact = kn.attribute(lm, p, a, rule="gauss_legendre", steps=16).double()
    two = kn.attribute(lm, p, a, rule="riemann_left", steps=2).double()
    assert t.error[0] == pytest.approx(float((two - exact).abs().max() / exact.abs().max()), rel=1e-6)
    assert t.error[1] == pytest.approx(0, abs=1e-9)  # the exact integral itself
    assert t["coarse set"][0] == len(coarse(two.float()))
    assert t["coarse-set Jaccard with exact"][1] == 1.0
    assert (t.seconds > 0).all()
