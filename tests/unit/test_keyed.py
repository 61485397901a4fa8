"""kn.runs.Keyed: a run directory named by the run's config. The same arguments resume in the same
directory; changed ones get another directory instead of a refusal; the results are a plain run's."""
import json
import logging

import pandas as pd
import pytest

from kn import checks
from kn.data.schema import Fact, FactSet
from kn.runs import JOURNAL, Keyed, run
from kn.runs.keyed import key
from kn.testing import tiny_lm

STEPS = 3
CAPITAL = ["the capital of [X] is [Y]", "[X] capital city is [Y]", "in [X] the capital is [Y]"]


def facts(n=3) -> FactSet:
    pairs = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid")][:n]
    return FactSet([Fact(f"capital/{s}", "capital", {"en": s, "xx": s}, {"en": o, "xx": o},
                         {"en": CAPITAL, "xx": CAPITAL[::-1]}) for s, o in pairs], "tiny-keyed")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("GPT-2")


def test_same_arguments_same_directory_and_a_plain_runs_results(lm, tmp_path):
    a = run(lm, facts(), Keyed(tmp_path, "tiny"), steps=STEPS, progress=False)
    assert a.out_dir.parent == tmp_path and a.out_dir.name.startswith("tiny-")
    cfg = json.loads((a.out_dir / "config.json").read_text())
    assert a.out_dir.name == f"tiny-{key(cfg)}"  # the key of what config.json records ("created" aside)
    journal = (a.out_dir / JOURNAL).read_bytes()
    again = run(lm, facts(), Keyed(tmp_path, "tiny"), steps=STEPS, progress=False)
    assert again.out_dir == a.out_dir and (a.out_dir / JOURNAL).read_bytes() == journal  # resumed: nothing redone
    plain = run(lm, facts(), tmp_path / "plain", steps=STEPS, progress=False)
    pd.testing.assert_frame_equal(a.facts.drop(columns="seconds"), plain.facts.drop(columns="seconds"))
    pd.testing.assert_frame_equal(a.neurons, plain.neurons)


def test_other_arguments_get_their_own_directory(lm, tmp_path):
    a = run(lm, facts(), Keyed(tmp_path, "tiny"), steps=STEPS, progress=False)
    b = run(lm, facts(), Keyed(tmp_path, "tiny"), steps=STEPS + 1, progress=False)  # a plain path would refuse
    c = run(lm, facts(2), Keyed(tmp_path, "tiny"), steps=STEPS, progress=False)
    assert len({a.out_dir, b.out_dir, c.out_dir}) == 3
    assert json.loads((b.out_dir / "config.json").read_text())["settings"]["attribution"]["steps"] == STEPS + 1
    assert len(c.facts) == 2 and len(a.facts) == 3


def test_multilingual_runs_are_keyed_too(lm, tmp_path):
    a = run(lm, facts(2), Keyed(tmp_path, "ml"), languages=["en", "xx"], steps=STEPS, progress=False)
    b = run(lm, facts(2), Keyed(tmp_path, "ml"), languages=["en", "xx"], steps=STEPS, progress=False)
    c = run(lm, facts(2), Keyed(tmp_path, "ml"), languages=["en"], steps=STEPS, progress=False)
    assert a.out_dir == b.out_dir != c.out_dir and a.out_dir.name.startswith("ml-")
    assert sorted(a.runs) == ["en", "xx"] and (a.out_dir / "config.json").exists()


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kn.runs.keyed" and r.levelno == logging.WARNING]


def test_a_new_directory_beside_others_is_never_silent(lm, tmp_path, caplog):
    """A Keyed run that starts a new directory where others of its name are says which, and how its
    config differs from the most recent of them; the first run, or a resumed one, says nothing."""
    caplog.set_level(logging.WARNING, logger="kn.runs.keyed")
    a = run(lm, facts(), Keyed(tmp_path, "tiny"), steps=STEPS, phases=("locate",), progress=False)
    run(lm, facts(), Keyed(tmp_path / "elsewhere", "tiny"), steps=STEPS + 1, phases=("locate",), progress=False)
    run(lm, facts(), Keyed(tmp_path, "other"), steps=STEPS + 1, phases=("locate",), progress=False)
    run(lm, facts(), Keyed(tmp_path, "tiny"), steps=STEPS, phases=("locate",), progress=False)  # resumed
    assert warnings(caplog) == []
    cfg = json.loads((a.out_dir / "config.json").read_text())
    (a.out_dir / "config.json").write_text(json.dumps({**cfg, "created": "2000-01-01T00:00:00+00:00"}))
    b = run(lm, facts(), Keyed(tmp_path, "tiny"), steps=STEPS + 1, phases=("locate",), progress=False)
    [said] = warnings(caplog)
    assert str(b.out_dir) in said and f"the most recent, {a.out_dir.name}, differs in" in said
    assert f"settings.attribution.steps: {STEPS + 1} now, {STEPS} in the directory" in said
    assert "data." not in said  # only what differs
    caplog.clear()
    c = run(lm, facts(2), Keyed(tmp_path, "tiny"), steps=STEPS + 1, phases=("locate",), progress=False)
    [said] = warnings(caplog)  # compared with b, the most recent: the data differ, the steps do not
    assert str(c.out_dir) in said and "2 other tiny-<key> run(s)" in said and b.out_dir.name in said
    assert "data.n_facts: 2 now, 3 in the directory" in said and "steps" not in said


def test_a_new_multilingual_directory_is_never_silent(lm, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="kn.runs.keyed")
    run(lm, facts(2), Keyed(tmp_path, "ml"), languages=["en", "xx"], steps=STEPS, phases=("locate",),
        progress=False)
    assert warnings(caplog) == []
    run(lm, facts(2), Keyed(tmp_path, "ml"), languages=["en"], steps=STEPS, phases=("locate",), progress=False)
    [said] = warnings(caplog)
    assert 'languages: ["en"] now, ["en", "xx"] in the directory' in said


@pytest.mark.parametrize("args, says", [(("",), "parent"), ((None,), "parent"), (("x", ""), "name"),
                                        (("x", "a/b"), "name")])
def test_bad_keyed_is_refused(args, says):
    with pytest.raises(checks.ArgumentError, match=says):
        Keyed(*args)
