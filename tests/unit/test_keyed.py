"""kn.runs.Keyed: a run directory named by the run's config. The same arguments resume in the same
directory; changed ones get another directory instead of a refusal; the results are a plain run's."""
import json

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
    assert sorted(a.runs) == ["en", "xx"] and (a.out_dir / "en" / "config.json").exists()


@pytest.mark.parametrize("args, says", [(("",), "parent"), ((None,), "parent"), (("x", ""), "name"),
                                        (("x", "a/b"), "name")])
def test_bad_keyed_is_refused(args, says):
    with pytest.raises(checks.ArgumentError, match=says):
        Keyed(*args)
