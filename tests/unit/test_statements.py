"""Fact-checking's model-facing part (the run phase "statements") on a tiny model: the plan follows
its definition, every statement's numbers equal a recomputation from kn's public kernels, wrong
objects come from the data's distractors, a resume redoes no fact, and a changed setting of the phase
or of a phase it reads gives new statements, never the old ones."""
import json

import pandas as pd
import pytest

import kn
from kn import factcheck
from kn import statements as S
from kn.data.schema import Fact, FactSet
from kn.data.templates import with_object
from kn.runs import JOURNAL, load_run, run
from kn.testing import tiny_lm

from test_run import tiny_facts


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("GPT-2", initializer_range=0.2)


PHASES = ("locate", "degenerate", "statements")
# a loose pair rule (alone: anything; together: any drop) so that a random tiny model has DKN sets
RUN = dict(steps=3, phases=PHASES, dkn_candidates=6, dkn_single=1.0, dkn_pair=0.0, fc_test=0.25, fc_random=3,
           progress=False)


@pytest.fixture(scope="module")
def res(lm, tmp_path_factory):
    return run(lm, tiny_facts(), tmp_path_factory.mktemp("dkn"), **RUN)


SETTINGS = S.FactCheck(test=0.25, n_random=3)


def test_plan_follows_its_definition(lm, res):
    plans = S.plan(res, SETTINGS, n_layers=lm.n_layers, width=lm.width)
    assert plans and set(plans) <= set(res.facts.relation)
    pairs = res.degenerate_pairs
    for r, p in plans.items():
        measured = [f for f in res.facts[res.facts.dkn_pairs.notna()].fact_id if res.relation_of()[f] == r]
        assert (list(p.train), list(p.test)) == factcheck.split(measured, test=0.25, seed=0, key=r)
        train_pairs = [[((a.layer_a, a.index_a), (a.layer_b, a.index_b)) for a in pairs[pairs.fact_id == f].itertuples()]
                       for f in p.train]
        assert list(p.dkn) == factcheck.dkn_set(train_pairs, 0.7)
        assert set(p.kn) == {n for f in p.train for n in res.fact_neurons(f)}
        assert len(p.random) == (3 if p.dkn else 0) and all(len(x) == len(p.dkn) for x in p.random)
    assert all(p.dkn for p in plans.values())
    again = S.plan(res, SETTINGS, n_layers=lm.n_layers, width=lm.width)
    assert again == plans  # seeded


def test_statements_equal_a_recomputation(lm, res):
    t = res.statements
    plans = S.plan(res, SETTINGS, n_layers=lm.n_layers, width=lm.width)
    assert set(t.fact_id) == {f for p in plans.values() for f in p.train + p.test}
    assert (t.groupby("fact_id").kind.apply(sorted).map(tuple) == ("false", "true")).all()
    for row in t.itertuples():
        p = plans[row.relation]
        prompt, answer = res.fact_queries(row.fact_id)[0]
        gold = answer.strip()
        assert (row.kind == "true") == (row.object == gold)
        ans = answer if row.kind == "true" else with_object(answer, row.object)
        if row.kind == "false":
            other = {res.fact_queries(f)[0][1].strip() for f in p.train + p.test}
            assert row.object in other - {gold}
        sc = kn.scores(lm, prompt, ans, res.settings.attribution)
        assert row.dkn == pytest.approx([float(sc[l, i]) for l, i in p.dkn], rel=1e-5, abs=1e-9)
        assert row.kn_mean == pytest.approx(float(sum(sc[l, i] for l, i in p.kn) / len(p.kn)), rel=1e-5, abs=1e-9)
        assert row.p == pytest.approx(kn.answer_prob(lm, prompt, ans), rel=1e-5)
        assert row.rank == kn.answer_rank(lm, prompt, ans)
        assert row.split == ("train" if row.fact_id in p.train else "test")
    d = factcheck.decisions(t)
    assert set(d.method) >= {"dkn", "argmax", "p-pair", "random", "all-kn"}
    assert len(factcheck.evaluate(d))
    assert load_run(res.out_dir).statements.equals(t)  # the table is rebuilt from the journal alone


def test_wrong_objects_from_the_data(lm, tmp_path):
    facts = FactSet([Fact(f.fact_id, f.relation, f.subject, f.object, f.templates,
                          {"en": ("Berlin",) if f.object["en"] != "Berlin" else ("Rome",)}) for f in tiny_facts()],
                    "tiny")
    t = run(lm, facts, tmp_path, **RUN).statements
    gold = {f.fact_id: f.object["en"] for f in facts}
    false = t[t.kind == "false"]
    assert len(false) and all(o == ("Berlin" if gold[f] != "Berlin" else "Rome") for f, o in zip(false.fact_id, false.object))


def test_resumes_and_never_serves_old_statements(lm, res, tmp_path, monkeypatch):
    lines = (res.out_dir / JOURNAL).read_text().splitlines()
    first = next(i for i, l in enumerate(lines) if json.loads(l)["type"] == "statement")
    (tmp_path / "config.json").write_bytes((res.out_dir / "config.json").read_bytes())
    (tmp_path / JOURNAL).write_text("\n".join(lines[: first + 2]) + "\n" + lines[first + 2][:20])  # torn mid-record
    done = {json.loads(l)["fact_id"] for l in lines[first: first + 2]}
    asked = []
    real = kn.attribution.scores
    monkeypatch.setattr(kn.attribution, "scores", lambda lm, p, a, s: asked.append(p) or real(lm, p, a, s))
    again = run(lm, tiny_facts(), tmp_path, **RUN)
    pd.testing.assert_frame_equal(again.statements, res.statements)
    assert len(asked) == 2 * (res.statements.fact_id.nunique() - len(done))  # the others, true and false once each
    n = len((tmp_path / JOURNAL).read_text().splitlines())
    # a setting of the phase: only the statements are redone, with new numbers
    other = run(lm, tiny_facts(), tmp_path, **{**RUN, "fc_random": 5})
    new = [json.loads(l) for l in (tmp_path / JOURNAL).read_text().splitlines()[n:]]
    assert {r["type"] for r in new} == {"statement"}
    assert other.statements.random.map(len).max() == 5 and res.statements.random.map(len).max() == 3
    # a setting of a phase it reads: the degenerate pairs and the statements are redone, never the old ones served
    looser = run(lm, tiny_facts(), tmp_path, **{**RUN, "fc_random": 5, "dkn_candidates": 4})
    assert looser.settings.dkn_candidates == 4
    redone = [json.loads(l) for l in (tmp_path / JOURNAL).read_text().splitlines()[n + len(new):]]
    assert {r["type"] for r in redone} == {"degenerate", "statement"}
    assert all(c == 4 for r in redone if r["type"] == "degenerate" for c in r["candidates"])  # what runs is what is recorded


def test_a_run_without_the_phase_it_needs_is_refused(lm, tmp_path):
    with pytest.raises(ValueError, match=r"phase 'statements' needs \['degenerate'\]"):
        run(lm, tiny_facts(), tmp_path / "plain", steps=3, phases=("locate", "statements"), progress=False)
    assert not (tmp_path / "plain").exists()


def test_cli_phases(lm, tmp_path, monkeypatch, capsys):
    from kn import cli
    from kn.runs import load_run

    monkeypatch.setattr(cli, "_load", lambda args: lm)
    monkeypatch.setattr(cli, "_facts", lambda args, languages: tiny_facts())
    out = tmp_path / "cli"
    assert cli.main(["run", "--steps", "3", "--phases", "locate,degenerate", "--dkn-candidates", "4", "--out",
                     str(out)]) == 0
    text = capsys.readouterr().out
    assert "DKN pairs/fact" in text and "suppress" not in text  # the columns its phases made
    res = load_run(out)
    assert res.settings.phases == ("locate", "degenerate") and res.settings.dkn_candidates == 4
    assert res.facts.dkn_pairs.notna().any()
    assert cli.main(["run", "--phases", "locate,nope", "--out", str(tmp_path / "b")]) == 2
    assert "unknown phase 'nope'" in capsys.readouterr().err


def test_a_recording_of_the_run_evaluates_as_the_run(res, tmp_path):
    """kn record keeps the statements' attribution lists (JSON cells): the fact-checking metrics read
    from the recording equal those of the run."""
    from kn import factcheck, recording

    rec = recording.read(recording.record_run(res.out_dir, tmp_path / "rec", "kn run (test)"))
    assert isinstance(rec["statements"].dkn.iloc[0], list) and isinstance(rec["statements"].random.iloc[0], list)
    live = factcheck.evaluate(factcheck.decisions(res.statements))
    assert len(live) and set(live.method) >= {"dkn", "random", "argmax"}
    pd.testing.assert_frame_equal(factcheck.recorded_summary(rec), live, check_dtype=False)
