"""kn.runs: dataset runs on a tiny model: tidy tables, errors recorded, kill -9 and resume, config checks."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from kn.data.schema import Fact, FactSet
from kn import IG, Activation
from kn.runs import JOURNAL, RunConfigError, RunSettings, load_run, run
from kn.testing import kill_when, tiny_lm

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4
CAPITAL = ["the capital of [X] is [Y]", "[X] capital city is [Y]", "in [X] the capital is [Y]",
           "[X] has its capital in [Y]"]
LANGUAGE = ["[X] speaks [Y]", "the official language of [X] is [Y]", "in [X] the language is [Y]",
            "[X] language is [Y]"]
PAIRS = {"capital": (CAPITAL, [("France", "Paris"), ("Germany", "Berlin"), ("Portugal", "Lisbon"),
                               ("Italy", "Rome"), ("Spain", "Madrid")]),
         "language": (LANGUAGE, [("France", "French"), ("Germany", "German"), ("Italy", "Italian"),
                                 ("Japan", "Japanese")])}


def tiny_facts() -> FactSet:
    """9 facts of 2 relations in the tiny tokenizer's words, but "Lisbon" (unknown: an error fact)."""
    return FactSet([Fact(f"{rel}/{s}", rel, {"en": s}, {"en": o}, {"en": ts})
                    for rel, (ts, pairs) in PAIRS.items() for s, o in pairs], "tiny")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("GPT-2")


@pytest.fixture(scope="module")
def baseline(lm, tmp_path_factory):
    """One uninterrupted run: the reference every other run must reproduce."""
    return run(lm, tiny_facts(), tmp_path_factory.mktemp("baseline"), steps=STEPS, progress=False)


def records(out: Path) -> list[dict]:
    return [json.loads(l) for l in (out / JOURNAL).read_text().splitlines() if l.strip()]


def assert_same_results(a, b) -> None:
    for name in ("facts", "neurons", "relations", "prompts"):
        x, y = getattr(a, name), getattr(b, name)
        if name == "facts":
            x, y = x.drop(columns="seconds"), y.drop(columns="seconds")
        pd.testing.assert_frame_equal(x.reset_index(drop=True), y.reset_index(drop=True), obj=name)


def assert_each_once(out: Path, facts: FactSet) -> None:
    recs = records(out)
    located = [r["fact_id"] for r in recs if r["type"] == "fact"]
    verified = [r["fact_id"] for r in recs if r["type"] == "verify"]
    relations = [r["relation"] for r in recs if r["type"] == "relation"]
    assert sorted(located) == sorted(f.fact_id for f in facts)
    assert len(verified) == len(set(verified)) and len(relations) == len(set(relations)) == len(facts.relations)


def test_tables_and_outputs(baseline):
    facts = tiny_facts()
    res, out = baseline, baseline.out_dir
    assert res.complete
    assert list(res.facts.fact_id) == [f.fact_id for f in facts]  # every fact exactly once, in order
    ok = res.facts[res.facts.error.isna()]
    assert len(ok) == 8 and (ok.n_prompts == 4).all() and (ok.n_neurons > 0).all()
    # the relation's share is the tuned one, the same for all its facts
    for rel in res.relations.itertuples():
        assert set(res.facts[(res.facts.relation == rel.relation) & res.facts.error.isna()].share) == {rel.share}
    # ratio of means over facts (the paper's), recomputed from the fact rows
    cap = ok[ok.relation == "capital"]
    row = res.relations.set_index("relation").loc["capital"]
    assert row.facts == 5 and row.errors == 1 and row.facts_verified == 4
    assert row.suppression == pytest.approx((cap.p_suppressed - cap.p_before).mean() / cap.p_before.mean())
    assert row.amplification == pytest.approx((cap.p_amplified - cap.p_before).mean() / cap.p_before.mean())
    # controls: other relation for the paper's control, same relation for ours, never the fact itself
    rel_of = dict(zip(res.facts.fact_id, res.facts.relation))
    assert all(rel_of[o] != r for o, r in zip(ok.control_other_fact, ok.relation))
    assert all(rel_of[s] == r and s != f for s, r, f in zip(ok.control_same_fact, ok.relation, ok.fact_id))
    assert ok.control_other_suppression.notna().all() and ok.control_same_suppression.notna().all()
    # neurons: one row per fact x neuron; n_facts_sharing counts the relation's facts holding it
    n = res.neurons
    assert len(n) == ok.n_neurons.sum()
    sharing = n.groupby(["relation", "layer", "index"]).fact_id.transform("count")
    assert (n.n_facts_sharing == sharing).all() and (n.n_prompts_found >= 3).all()
    # parquet files hold the same tables; load_run rebuilds them from the journal alone
    for name in ("facts", "neurons", "relations", "prompts"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}.parquet"), getattr(res, name),
                                      check_dtype=False)
    assert_same_results(load_run(out), res)
    cfg = json.loads((out / "config.json").read_text())
    import kn

    assert cfg["kn_version"] == kn.__version__ and cfg["model"]["model"] == "tiny-GPT-2"
    assert cfg["data"] == {"name": "tiny", "fingerprint": tiny_facts().fingerprint(), "n_facts": 9,
                           "relations": ["capital", "language"]}
    assert cfg["settings"]["attribution"]["steps"] == STEPS and cfg["settings"]["locate"]["threshold"] == 0.2


def test_error_recorded_and_run_goes_on(baseline):
    row = baseline.facts.set_index("fact_id").loc["capital/Portugal"]
    assert row.error.startswith("ValueError: ") and "Lisbon" in row.error
    err = next(r for r in records(baseline.out_dir) if r["fact_id"] == "capital/Portugal")["error"]
    assert err["type"] == "ValueError" and "cannot represent" in err["message"]
    # facts after it were processed
    assert baseline.facts.set_index("fact_id").loc["capital/Italy"].n_neurons > 0


def test_any_exception_is_recorded(lm, tmp_path, monkeypatch):
    from kn.runs.phases import locate as L

    real = L.batch_scores

    def flaky(lm_, prompts, answers, *a, **kw):
        if any(answer.strip() == "German" for answer in answers):
            raise RuntimeError("simulated failure")
        return real(lm_, prompts, answers, *a, **kw)

    monkeypatch.setattr(L, "batch_scores", flaky)
    res = run(lm, tiny_facts(), tmp_path, steps=STEPS, progress=False)
    errors = res.facts.set_index("fact_id").error.dropna()
    assert errors["language/Germany"] == "RuntimeError: simulated failure"
    assert set(errors.index) == {"capital/Portugal", "language/Germany"}
    assert res.complete and res.facts.n_neurons.notna().sum() == 7


def test_resume_of_finished_run_is_a_no_op(lm, baseline):
    before = (baseline.out_dir / JOURNAL).read_bytes()
    again = run(lm, tiny_facts(), baseline.out_dir, steps=STEPS, progress=False)
    assert (baseline.out_dir / JOURNAL).read_bytes() == before
    assert_same_results(again, baseline)


def test_torn_last_line_is_cut_and_redone(lm, baseline, tmp_path):
    lines = (baseline.out_dir / JOURNAL).read_bytes().splitlines(keepends=True)
    (tmp_path / "config.json").write_bytes((baseline.out_dir / "config.json").read_bytes())
    (tmp_path / JOURNAL).write_bytes(b"".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # killed mid-write
    res = run(lm, tiny_facts(), tmp_path, steps=STEPS, progress=False)
    assert_each_once(tmp_path, tiny_facts())
    assert_same_results(res, baseline)


def test_config_mismatch_refuses_to_resume(lm, baseline):
    with pytest.raises(RunConfigError, match=r"(?s)cannot be resumed:.*settings\.seed: 1 now, 0.*--fresh"):
        run(lm, tiny_facts(), baseline.out_dir, steps=STEPS, seed=1, progress=False)
    with pytest.raises(RunConfigError, match=r"data\.fingerprint"):
        run(lm, tiny_facts()[:4], baseline.out_dir, steps=STEPS, progress=False)
    with pytest.raises(RunConfigError, match=r"model\.model"):
        run(tiny_lm("Llama"), tiny_facts(), baseline.out_dir, steps=STEPS, progress=False)


# one other valid value per common setting: a run must refuse to resume with any of them changed
COMMON_CHANGED = {"languages": ("de",), "attribution": IG(steps=STEPS, rule="gauss_legendre"), "seed": 1}
# one other valid value per phase setting: a resume with it recomputes what it invalidates
PHASE_CHANGED = {"threshold": 0.3, "share": 0.6, "min_prompts": 2, "kns_per_fact": (1, 4), "share_step": 0.1,
                 "share_tries": 3, "relation_neuron_share": 0.5, "controls": False, "suppress_factor": 0.5,
                 "amplify_factor": 3.0, "dkn_candidates": 10, "dkn_single": 0.1, "dkn_pair": 0.3, "dkn_share": 0.7}


def test_config_records_the_settings_the_run_used(baseline):
    from kn.runs.phases import COMMON, PHASES

    cfg = json.loads((baseline.out_dir / "config.json").read_text())
    settings = RunSettings(attribution=IG(steps=STEPS))
    assert cfg["settings"] == settings.asdict() and list(cfg["settings"]) == [*COMMON, "locate", "verify"]
    assert set(cfg["settings"]["verify"]) == {"controls", "suppress_factor", "amplify_factor"}
    assert cfg["settings"]["attribution"] == {**IG().to_dict(), "steps": STEPS} and IG().to_dict()["kind"] == "ig"
    assert RunSettings.from_dict(cfg["settings"]).asdict() == cfg["settings"]
    assert baseline.settings.attribution == IG(steps=STEPS)
    assert cfg["settings"]["locate"]["threshold"] == 0.2  # resolved: the value the run used, not "the default"
    assert cfg["kind"] == "kn run" and cfg["format"] == 3 and "degenerate" in PHASES


@pytest.mark.parametrize("name", sorted(COMMON_CHANGED))
def test_any_changed_common_setting_refuses_to_resume(lm, baseline, name):
    from kn.runs.phases import COMMON

    assert set(COMMON_CHANGED) == set(COMMON) - {"phases"}, "a new common setting needs a changed value here"
    before = (baseline.out_dir / JOURNAL).read_bytes()
    changed = RunSettings.make(RunSettings(attribution=IG(steps=STEPS)), **{name: COMMON_CHANGED[name]})
    facts = tiny_facts()
    if name == "languages":  # a run needs facts the model can be asked in its language (else it is refused
        # before any resume): "de" written in the tiny tokenizer's words
        facts = FactSet([*facts, Fact("de/1", "capital", {"de": "France"}, {"de": "Paris"},
                                      {"de": ["the capital of [X] is [Y]"]})], "tiny+de")
    with pytest.raises(RunConfigError, match=rf"(?s)cannot be resumed:.*settings\.{name}[.:]"):
        run(lm, facts, baseline.out_dir, changed, progress=False)
    assert (baseline.out_dir / JOURNAL).read_bytes() == before


NEW_NUMBERS = set(PHASE_CHANGED) - {"share"}  # changes that must show in the tables (the share tuning may find the same share)


@pytest.fixture(scope="module")
def dkn_baseline(lm, tmp_path_factory):
    return run(lm, tiny_facts(), tmp_path_factory.mktemp("dkn"), steps=STEPS, phases=("locate", "verify", "degenerate"),
               progress=False)


def _tables_differ(a, b) -> bool:
    for name in a.tables:
        try:
            pd.testing.assert_frame_equal(a.tables[name], b.tables[name], check_dtype=False)
        except AssertionError:
            return True
    return False


@pytest.mark.parametrize("name", sorted(PHASE_CHANGED))
def test_a_changed_phase_setting_recomputes_what_it_invalidates(lm, baseline, dkn_baseline, name, tmp_path):
    """Resuming a finished run with one phase setting changed: the records that depend on it are made
    anew (appended; the old ones stay in the journal), the tables show new numbers, config.json
    records the new value and keeps the old settings in its history; the same call again is a no-op."""
    from kn.runs.phases import PHASES, owner_of
    from kn.runs.phases.setting import scoped

    settings = [PHASES[n].Settings() for n in ("locate", "verify", "degenerate")]  # statements: test_statements.py
    assert set(PHASE_CHANGED) == {f for s in settings for f in scoped(s, "fact") | scoped(s, "relation")
                                  | scoped(s, "table")}
    owner = owner_of(name)
    first = dkn_baseline if owner.name == "degenerate" else baseline
    phases = first.settings.phases
    out = tmp_path / "run"
    out.mkdir()
    for f in ("config.json", JOURNAL):
        (out / f).write_bytes((first.out_dir / f).read_bytes())
    before = records(out)
    res = run(lm, tiny_facts(), out, steps=STEPS, phases=phases, progress=False, **{name: PHASE_CHANGED[name]})
    after = records(out)
    assert after[: len(before)] == before  # nothing of the old run is lost
    scope = next(f.metadata["scope"] for f in __import__("dataclasses").fields(owner.Settings) if f.name == name)
    new_types = {r["type"] for r in after[len(before):]}
    if scope == "table":
        assert new_types == set()
    elif scope == "relation":
        assert "relation" in new_types and "fact" not in new_types
    else:
        assert owner.fact_record in new_types
    if name in NEW_NUMBERS:
        assert _tables_differ(first, res), f"changing {name} changed no number"
    cfg = json.loads((out / "config.json").read_text())
    value = PHASE_CHANGED[name]
    assert cfg["settings"][owner.name][name] == (list(value) if isinstance(value, tuple) else value)
    assert cfg["history"][-1]["settings"][owner.name][name] != cfg["settings"][owner.name][name]
    assert_same_results(load_run(out), res)
    again = run(lm, tiny_facts(), out, steps=STEPS, phases=phases, progress=False, **{name: PHASE_CHANGED[name]})
    assert records(out) == after
    assert_same_results(again, res)


def test_adding_a_phase_keeps_the_records_of_the_others(lm, baseline, tmp_path):
    out = tmp_path / "run"
    for name in ("config.json", JOURNAL):
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_bytes((baseline.out_dir / name).read_bytes())
    res = run(lm, tiny_facts(), out, steps=STEPS, phases=("locate", "verify", "degenerate"), dkn_candidates=4,
              progress=False)
    new = records(out)[len(records(baseline.out_dir)):]
    assert {r["type"] for r in new} == {"degenerate"} and res.facts.dkn_pairs.notna().sum() == 8
    pd.testing.assert_frame_equal(res.neurons, baseline.neurons)


def test_settings_are_checked_once_with_clear_errors(lm, tmp_path):
    for bad, message in [(dict(share=1.5), "share must be between 0.0 and 1.0, got 1.5"), (dict(steps=0), "steps"),
                         (dict(phases=("verify",)), "needs \\['locate'\\] before it"),
                         (dict(phases=("locate", "nope")), "unknown phase 'nope'"),
                         (dict(kns_per_fact=(5, 2)), "kns_per_fact must be"), (dict(method="x"), "method must be")]:
        with pytest.raises(ValueError, match=message):
            RunSettings.make(**bad)
    with pytest.raises(TypeError, match="attribution must be kn.IG"):
        RunSettings(attribution="ig")
    with pytest.raises(TypeError, match="not both"):
        RunSettings.make(attribution=IG(), steps=3)
    assert RunSettings.make(method="activation").attribution == Activation()
    assert RunSettings.make(method="activation").coarse_threshold == 0.5
    assert RunSettings.make(RunSettings.make(rule="linspace"), steps=3).attribution == IG(steps=3, rule="linspace")
    with pytest.raises(TypeError, match="unknown run setting.*stepz"):
        run(lm, tiny_facts(), tmp_path, stepz=3, progress=False)
    assert not any(tmp_path.iterdir())  # nothing written before the settings are valid


def test_a_format_1_run_resumes(lm, baseline, tmp_path):
    """A directory the code before kn.runs wrote (config format 1, same journal) resumes as a no-op."""
    for name in ("config.json", JOURNAL):
        (tmp_path / name).write_bytes((baseline.out_dir / name).read_bytes())
    cfg = json.loads((tmp_path / "config.json").read_text())
    old = {k: v for k, v in cfg["settings"].items() if k not in ("phases", "relation_neuron_share", "attribution")}
    old |= {"method": "ig", "steps": STEPS}
    (tmp_path / "config.json").write_text(json.dumps({**{k: v for k, v in cfg.items() if k != "kind"},
                                                      "format": 1, "settings": old}))
    res = run(lm, tiny_facts(), tmp_path, steps=STEPS, progress=False)
    assert (tmp_path / JOURNAL).read_bytes() == (baseline.out_dir / JOURNAL).read_bytes()
    assert_same_results(res, baseline)
    assert res.config["format"] == 1 and res.settings == RunSettings.make(steps=STEPS, threshold=0.2)
    with pytest.raises(RunConfigError, match=r"settings\.seed: 1 now, 0"):
        run(lm, tiny_facts(), tmp_path, steps=STEPS, seed=1, progress=False)
    # its settings changed: the old records still count where they are valid (legacy keys), only verify is redone
    res = run(lm, tiny_facts(), tmp_path, steps=STEPS, amplify_factor=3.0, progress=False)
    new = records(tmp_path)[len(records(baseline.out_dir)):]
    assert {r["type"] for r in new} == {"verify"} and res.config["format"] == 3 and "legacy_keys" in res.config
    pd.testing.assert_frame_equal(load_run(tmp_path).neurons, baseline.neurons)


def test_a_new_phase_is_one_class(lm, tmp_path, monkeypatch):
    """A phase added without touching the others: its records, its fact column, its own table; resumable."""
    from kn.runs import phases
    from kn.runs.phases.locate import knowledge_neurons

    class Layers(phases.Phase):
        name, fact_record, needs = "layers", "layers", ("locate",)
        fact_columns, table_names = ("top_layer",), ("layers",)

        def wants(self, fact_id, state):
            return knowledge_neurons(state, fact_id, state.get("fact", fact_id)["relation"]) is not None

        def run_fact(self, lm, fact, state):
            kns = knowledge_neurons(state, fact.fact_id, fact.relation)
            return {"type": self.fact_record, "fact_id": fact.fact_id, "relation": fact.relation,
                    "layers": sorted({l for l, _ in kns})}

        def fact_row(self, fact_id, state):
            rec = state.get(self.fact_record, fact_id)
            return {"top_layer": max(rec["layers"], default=None) if rec else None}

        def tables(self, state):
            rows = [{"fact_id": f, "layer": l} for f, r in state.all(self.fact_record).items() for l in r["layers"]]
            return {"layers": pd.DataFrame(rows, columns=["fact_id", "layer"])}

    monkeypatch.setitem(phases.PHASES, "layers", Layers)
    facts = tiny_facts().filter(relation="language")
    res = run(lm, facts, tmp_path, steps=2, phases=("locate", "layers"), progress=False)
    assert list(res.facts.columns[-3:]) == ["top_layer", "seconds", "error"] and "suppression" not in res.facts
    by_fact = res.neurons.groupby("fact_id").layer.max()
    assert res.facts.set_index("fact_id").top_layer.to_dict() == by_fact.to_dict()
    assert set(res.layers.fact_id) == set(by_fact.index) and (tmp_path / "layers.parquet").exists()
    assert [r["type"] for r in records(tmp_path)] == ["fact"] * 4 + ["relation"] + ["layers"] * 4
    assert_same_results(load_run(tmp_path), res)
    journal = (tmp_path / JOURNAL).read_bytes()
    assert_same_results(run(lm, facts, tmp_path, steps=2, phases=("locate", "layers"), progress=False), res)
    assert (tmp_path / JOURNAL).read_bytes() == journal


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file in `folder` (one level), by name, as bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_fresh_moves_a_run_aside(lm, tmp_path, caplog):
    """resume=False on a kn run: the whole directory (with whatever else was in it) goes to
    DIR.replaced-<UTC time>, its journal intact, and the run starts anew in DIR."""
    facts = tiny_facts().filter(relation="language")
    out = tmp_path / "run"
    old = run(lm, facts, out, steps=2, controls=False, progress=False)
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    caplog.set_level(logging.WARNING, logger="kn.runs.directory")
    res = run(lm, facts, out, steps=STEPS, controls=False, progress=False, resume=False)
    assert json.loads((out / "config.json").read_text())["settings"]["attribution"]["steps"] == STEPS
    assert len(records(out)) == 4 + 1 + 4 and res.facts.control_other_fact.isna().all()
    assert not (out / "notes.txt").exists()
    [aside] = tmp_path.glob("run.replaced-*")
    assert re.fullmatch(r"run\.replaced-\d{8}T\d{6}Z", aside.name)
    assert snapshot(aside) == before  # the old run, journal and all, as it was
    assert_same_results(load_run(aside), old)
    assert any(str(aside) in r.getMessage() and "nothing was deleted" in r.getMessage() for r in caplog.records)
    run(lm, facts, out, steps=2, controls=False, progress=False, resume=False)  # again, within the same second
    assert len(set(tmp_path.glob("run.replaced-*"))) == 2 and snapshot(aside) == before


def test_a_fresh_start_waits_for_no_one(lm, tmp_path):
    """A run another process is writing (its lock held) is neither replaced nor moved."""
    import fcntl

    facts = tiny_facts().filter(relation="language")
    out = tmp_path / "run"
    run(lm, facts, out, steps=2, phases=("locate",), progress=False)
    before = snapshot(out)
    with open(out / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(RunConfigError, match="another process is writing"):
            run(lm, facts, out, steps=STEPS, phases=("locate",), progress=False, resume=False)
        from kn.runs.directory import replace

        with pytest.raises(RunConfigError, match="another process is writing"):
            replace(out)
    assert snapshot(out) == before and not list(tmp_path.glob("run.replaced-*"))


CHILD = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    import kn
    from kn.data.schema import FactSet
    from kn.runs.phases import locate as L, verify as V
    from kn.testing import kill_when, tiny_lm
    def slow(f, pause):  # slow enough to be killed part-way
        def g(*a, **k):
            time.sleep(pause)
            return f(*a, **k)
        return g
    L.batch_scores, V.Verify._effects = slow(L.batch_scores, 0.24), slow(V.Verify._effects, 0.9)  # a fact: 3 x 0.3 s as when each effect was a call
    kn.run(tiny_lm("GPT-2"), FactSet.load(sys.argv[1], name="tiny"), sys.argv[2], steps=%d, progress=False)
    print("finished")
""") % STEPS


def test_kill_9_and_resume(lm, baseline, tmp_path):
    """kill -9 in the middle of phase 2 of the first relation (the torn-line test resumes phase 1)."""
    facts = tiny_facts()
    data, out = facts.save(tmp_path / "facts.jsonl"), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(out)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_when(child, lambda: (out / JOURNAL).exists() and any(  # once phase 2 has begun
        l.startswith(b'{"type": "verify"') for l in (out / JOURNAL).read_bytes().splitlines(keepends=True)
        if l.endswith(b"\n")), timeout=90)
    partial = records(out)
    assert 1 <= sum(r["type"] == "verify" for r in partial) < 4  # killed while verifying the first relation
    assert sum(r["type"] == "fact" for r in partial) == 5
    res = run(lm, FactSet.load(data, name="tiny"), out, steps=STEPS, progress=False)
    assert_each_once(out, facts)
    assert_same_results(res, baseline)


def test_masked_lm_run(tmp_path):
    res = run(tiny_lm("BERT"), tiny_facts(), tmp_path, steps=2, progress=False)
    assert res.complete and res.facts.error.notna().sum() == 1
    assert res.facts.n_neurons.notna().sum() == 8 and len(res.relations) == 2


def test_cli_run(lm, tmp_path, monkeypatch, capsys):
    from kn import cli

    monkeypatch.setattr(cli, "_load", lambda args: lm)
    out = tmp_path / "cli"
    code = cli.main(["run", "--data", "builtin", "--relations", "P36,official_language", "--facts-per-relation",
                     "2", "--steps", "2", "--out", str(out)])
    assert code == 0
    res = load_run(out)
    assert set(res.facts.relation) == {"capital", "official_language"} and len(res.facts) == 4
    assert res.complete and "mean over relations" in capsys.readouterr().out
    assert cli.main(["run", "--data", "builtin", "--relations", "P36", "--steps", "3", "--out", str(out)]) == 2
    assert "different configuration" in capsys.readouterr().err
    assert cli.main(["run", "--data", f"pararel:{tmp_path / 'nowhere'}", "--out", str(out)]) == 2
    assert "cannot load --data" in capsys.readouterr().err
    assert cli.main(["run", "--method", "activation", "--steps", "3", "--out", str(tmp_path / "x")]) == 2
    assert "--steps belongs to integrated gradients" in capsys.readouterr().err
    assert cli.main(["run", "--method", "activation", "--rule", "linspace", "--out", str(tmp_path / "x")]) == 2
    assert "--rule belongs to integrated gradients" in capsys.readouterr().err


def test_cli_run_records_the_rule(lm, tmp_path, monkeypatch):
    from kn import cli

    monkeypatch.setattr(cli, "_load", lambda args: lm)
    out = tmp_path / "gl"
    assert cli.main(["run", "--data", "builtin", "--relations", "P36", "--facts-per-relation", "2", "--steps", "2",
                     "--rule", "gauss_legendre", "--out", str(out)]) == 0
    attribution = load_run(out).config["settings"]["attribution"]
    assert attribution["rule"] == "gauss_legendre" and attribution["steps"] == 2
    out = tmp_path / "amig"
    assert cli.main(["run", "--data", "builtin", "--relations", "P36", "--facts-per-relation", "2", "--steps", "2",
                     "--baseline", "amig", "--multiplier", "x", "--out", str(out)]) == 0
    res = load_run(out)
    assert res.settings.attribution == IG(steps=2, baseline="amig", multiplier="x")
    assert res.complete and len(res.facts) == 2
    assert cli.main(["run", "--method", "activation", "--baseline", "amig", "--out", str(tmp_path / "x")]) == 2



def test_a_screened_run_records_its_screen_and_refuses_another(lm, baseline, tmp_path, monkeypatch, capsys):
    from kn import cli

    res = run(lm, tiny_facts(), tmp_path / "api", steps=STEPS, screen=1, progress=False)
    cfg = json.loads((res.out_dir / "config.json").read_text())
    assert cfg["settings"]["attribution"] == {**IG().to_dict(), "steps": STEPS, "screen": 1}
    assert res.settings.attribution == IG(steps=STEPS, screen=1) and res.complete
    assert "screen" not in json.loads((baseline.out_dir / "config.json").read_text())["settings"]["attribution"]
    def layers_per_prompt(out):  # the layers of each prompt's coarse set, from the journal
        return [{l for l, _ in s} for r in records(out) for s in r.get("sets", [])]
    assert all(len(ls) <= 1 for ls in layers_per_prompt(res.out_dir))  # IG ran on one layer per prompt
    assert any(len(ls) > 1 for ls in layers_per_prompt(baseline.out_dir))  # unscreened, it spans several
    before = (res.out_dir / JOURNAL).read_bytes()
    for other in (2, None):  # a change of screen, as of any attribution field, refuses to resume
        with pytest.raises(RunConfigError, match=r"(?s)cannot be resumed:.*settings\.attribution"):
            run(lm, tiny_facts(), res.out_dir, steps=STEPS, screen=other, progress=False)
    with pytest.raises(RunConfigError, match=r"(?s)cannot be resumed:.*settings\.attribution"):
        run(lm, tiny_facts(), baseline.out_dir, steps=STEPS, screen=1, progress=False)
    assert (res.out_dir / JOURNAL).read_bytes() == before
    assert run(lm, tiny_facts(), res.out_dir, steps=STEPS, screen=1, progress=False).complete  # same: resumes

    monkeypatch.setattr(cli, "_load", lambda args: lm)
    out = tmp_path / "cli"
    assert cli.main(["run", "--data", "builtin", "--relations", "P36", "--facts-per-relation", "2", "--steps", "2",
                     "--screen", "2", "--out", str(out)]) == 0
    assert load_run(out).config["settings"]["attribution"]["screen"] == 2
    assert load_run(out).settings.attribution == IG(steps=2, screen=2)
    assert cli.main(["run", "--method", "activation", "--screen", "2", "--out", str(tmp_path / "x")]) == 2
    assert "--screen belongs to integrated gradients" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "--screen", "0", "--out", str(tmp_path / "x")])
    assert "--screen: 0 is not >= 1" in capsys.readouterr().err and not (tmp_path / "x").exists()
    seen = []
    monkeypatch.setattr(cli, "cmd_locate", lambda args: seen.append(cli.attribution(args)))
    assert cli.main(["locate", "a", "b", "c", "-a", "x", "--screen", "3"]) == 0 and seen[-1] == IG(screen=3)
    assert cli.main(["locate", "a", "b", "c", "-a", "x", "--method", "gradxact", "--screen", "3"]) == 2
    assert "--screen belongs to integrated gradients" in capsys.readouterr().err and len(seen) == 1
    assert cli.main(["locate", "a", "b", "c", "-a", "x", "--head-dtype", "bfloat16"]) == 0
    assert seen[-1] == IG(head_dtype="bfloat16")
    assert cli.main(["locate", "a", "b", "c", "-a", "x", "--method", "gradxact", "--head-dtype", "bfloat16"]) == 2
    assert "--head-dtype belongs to integrated gradients" in capsys.readouterr().err and len(seen) == 2

def test_select_facts_is_seeded_and_capped(lm):
    from kn.data import builtin, select_facts

    a = select_facts(builtin(), relations=["P36", "sport"], per_relation=3, seed=1)
    assert a == select_facts(builtin(), relations=["capital", "sport"], per_relation=3, seed=1)
    assert a.relations == ("capital", "sport") and len(a) == 6
    assert len(select_facts(tiny_facts(), lm=lm, known=True, k=1, min_fraction=1.0)) < 8  # a random model
    everything = len(lm.tokenizer)  # gold always in the top-k: every fact the model can write is known
    known = select_facts(tiny_facts(), per_relation=4, lm=lm, known=True, k=everything)
    assert len(known) == 8 and "capital/Portugal" not in known  # "Lisbon" is [UNK]
    assert len(select_facts(tiny_facts(), per_relation=2, lm=lm, known=True, k=everything)) == 4
    with pytest.raises(ValueError, match="not in the data"):
        select_facts(builtin(), relations=["P9999"])


def test_fresh_never_replaces_what_is_not_a_run(lm, tmp_path, monkeypatch, capsys):
    """--fresh on a model directory (its own config.json) or any other non-empty non-run directory:
    refused with a clear error, nothing changed; an empty directory is fine."""
    from kn import cli

    loads = []
    monkeypatch.setattr(cli, "_load", lambda args: loads.append(args.out) or lm)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    files = {"config.json": '{"model_type": "gpt2", "n_layer": 3}', "model.safetensors": "weights",
             "journal.jsonl": '{"not": "a kn journal"}\n'}
    for name, text in files.items():
        (model_dir / name).write_text(text)
    args = ["run", "--data", "builtin", "--relations", "P36", "--facts-per-relation", "1", "--steps", "2",
            "--no-controls", "--out"]
    assert cli.main(args + [str(model_dir), "--fresh"]) == 2
    err = capsys.readouterr().err
    assert "not a kn run (its config.json is not a kn run's config)" in err and "nothing was changed" in err
    assert "config.json, journal.jsonl, model.safetensors" in err and "choose another output directory" in err
    assert {p.name: p.read_text() for p in model_dir.iterdir()} == files  # not even a lock file
    assert cli.main(args + [str(model_dir)]) == 2  # resuming into it is refused too, without suggesting --fresh
    err = capsys.readouterr().err
    assert "not a kn run" in err and "--fresh" not in err
    assert {p.name: p.read_text() for p in model_dir.iterdir()} == files
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunConfigError, match="not a kn run"):
        run(lm, tiny_facts()[:1], other, steps=2, controls=False, progress=False, resume=False)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not loads  # refused before the model is loaded
    assert cli.main(args + [str(empty), "--fresh"]) == 0 and loads == [str(empty)]
    assert not list(tmp_path.glob("empty.replaced-*"))  # nothing to move aside


def test_a_users_folder_is_refused_and_left_as_it_was(lm, tmp_path, monkeypatch, capsys):
    """A folder of a user's own facts.parquet and selection.json (names a run uses too): kn run, by
    the API or the CLI, with or without a fresh start, refuses it, naming them; not a byte changes."""
    from kn import cli

    mine = tmp_path / "mine"
    mine.mkdir()
    pd.DataFrame({"fact": ["my own"], "score": [0.5]}).to_parquet(mine / "facts.parquet")
    (mine / "selection.json").write_text('{"fact_ids": ["capital/France"], "why": "my pick"}')
    before = snapshot(mine)
    for resume in (True, False):
        with pytest.raises(RunConfigError) as err:
            run(lm, tiny_facts(), mine, steps=2, progress=False, resume=resume)
        assert "not a kn run and not empty: it holds facts.parquet, selection.json. kn runs only" in str(err.value)
        assert snapshot(mine) == before
    loads = []
    monkeypatch.setattr(cli, "_load", lambda args: loads.append(args.out) or lm)
    argv = ["run", "--data", "builtin", "--relations", "P36", "--facts-per-relation", "1", "--steps", "2",
            "--out", str(mine)]
    for extra in ([], ["--fresh"], ["--languages", "en,fr"]):
        assert cli.main(argv + extra) == 2
        err = capsys.readouterr().err
        assert "facts.parquet, selection.json" in err and "choose another output directory" in err
        assert snapshot(mine) == before
    assert not loads and not list(tmp_path.glob("mine.replaced-*"))
    # what the CLI writes before a run starts (its selection, a lock) is kn's: such a folder is used
    kn_only = tmp_path / "kn_only"
    kn_only.mkdir()
    (kn_only / ".lock").write_text("")
    (kn_only / "selection.json").write_text('{"key": {}, "fact_ids": ["capital/France"]}')
    assert len(run(lm, tiny_facts().filter(ids=["capital/France"]), kn_only, steps=2, phases=("locate",),
                   progress=False).facts) == 1


def test_cli_resume_reuses_the_fact_selection(lm, tmp_path, monkeypatch, capsys):
    """`kn run --known` probes the model for every candidate fact; a resumed run reuses the choice
    kept in the run directory instead of probing again, and a different selection probes anew."""
    import json

    from kn import cli, data

    monkeypatch.setattr(cli, "_load", lambda args: lm)
    out = tmp_path / "sel"
    argv = ["run", "--data", "builtin", "--relations", "P36", "--facts-per-relation", "2", "--steps", "2",
            "--phases", "locate", "--out", str(out)]
    assert cli.main(argv) == 0
    saved = json.loads((out / "selection.json").read_text())
    assert len(saved["fact_ids"]) == 2 and saved["key"]["per_relation"] == 2
    first = load_run(out).facts.fact_id.tolist()

    def no_probe(*a, **k):
        raise AssertionError("the selection was recomputed on resume")

    monkeypatch.setattr(data, "select_facts", no_probe)
    assert cli.main(argv) == 0 and "reusing the fact selection" in capsys.readouterr().err
    assert load_run(out).facts.fact_id.tolist() == first
    with pytest.raises(AssertionError, match="recomputed"):  # another selection: probed again
        cli.main(argv[:6] + ["3"] + argv[7:])
    monkeypatch.undo()
    monkeypatch.setattr(cli, "_load", lambda args: lm)
    old = snapshot(out)
    assert cli.main(argv + ["--fresh"]) == 0  # a fresh start moves the run aside, its selection too
    assert json.loads((out / "selection.json").read_text())["fact_ids"] == saved["fact_ids"]
    [aside] = tmp_path.glob("sel.replaced-*")
    assert snapshot(aside) == old


def test_cli_runs_of_the_same_facts_share_one_selection(lm, tmp_path, monkeypatch, capsys):
    """A second run of the same facts under another setting, in another directory, takes the first's
    selection (kept in the shared cache) instead of probing again, and writes it with its counts into
    its own selection.json; other facts, or --fresh, probe anew. A corrupt or foreign cache file is
    not a selection."""
    import json

    from kn import cli, data
    from kn.data import shared_selection

    monkeypatch.setattr(cli, "_load", lambda args: lm)
    argv = ["run", "--data", "builtin", "--relations", "P36", "--facts-per-relation", "2", "--steps", "2",
            "--phases", "locate", "--out"]
    assert cli.main(argv + [str(tmp_path / "a")]) == 0
    first = json.loads((tmp_path / "a" / "selection.json").read_text())
    assert first["selection"]["selected"] == 2 and first["selection"]["counts"]["en"]["usable"] >= 2

    def no_probe(*a, **k):
        raise AssertionError("probed again")

    monkeypatch.setattr(data, "select_facts", no_probe)
    assert cli.main(argv + [str(tmp_path / "b"), "--rule", "gauss_legendre"]) == 0
    assert "an earlier run made of the same facts" in capsys.readouterr().err
    second = json.loads((tmp_path / "b" / "selection.json").read_text())
    assert second["fact_ids"] == first["fact_ids"] and second["selection"] == first["selection"]
    assert load_run(tmp_path / "b").facts.fact_id.tolist() == load_run(tmp_path / "a").facts.fact_id.tolist()
    from kn import recording  # a recording says what the selection was

    rec = recording.record_run(tmp_path / "b", tmp_path / "rec")
    assert json.loads((rec / "provenance.json").read_text())["selection"] == first["selection"]
    with pytest.raises(AssertionError, match="probed again"):  # other facts
        cli.main(argv[:6] + ["1"] + argv[7:] + [str(tmp_path / "c")])
    with pytest.raises(AssertionError, match="probed again"):  # a fresh start
        cli.main(argv + [str(tmp_path / "b"), "--fresh"])
    [kept] = (tmp_path / "shared-selections").glob("*.json")
    kept.write_text("{not json")
    with pytest.raises(AssertionError, match="probed again"):
        cli.main(argv + [str(tmp_path / "d")])
    key = {"model": "m"}
    shared_selection.path_of(key).write_text(json.dumps({"key": {"model": "other"}, "fact_ids": []}))
    assert shared_selection.lookup(key) is None
    assert shared_selection.keep(key, ["x"], None) is not None and shared_selection.lookup(key)["fact_ids"] == ["x"]
    assert not shared_selection.shareable(str(tmp_path)) and shared_selection.shareable("gemma-3-270m")


def test_dkn_candidates_beyond_what_locate_keeps(lm, dkn_baseline, tmp_path):
    """locate keeps each prompt's top 20; 25 candidates are recomputed, run and recorded as 25."""
    from kn.runs.phases.locate import TOP

    for f in ("config.json", JOURNAL):
        (tmp_path / f).write_bytes((dkn_baseline.out_dir / f).read_bytes())
    res = run(lm, tiny_facts(), tmp_path, steps=STEPS, phases=("locate", "verify", "degenerate"),
              dkn_candidates=TOP + 5, progress=False)
    deg = [r for r in records(tmp_path)[len(records(dkn_baseline.out_dir)):] if r["type"] == "degenerate"]
    assert deg and all(c == TOP + 5 for r in deg for c in r.get("candidates", [TOP + 5]))
    assert res.config["settings"]["degenerate"]["dkn_candidates"] == TOP + 5


def test_a_phase_left_out_or_added_is_said_quietly(lm, dkn_baseline, tmp_path, caplog):
    """Only a changed setting of a phase the run keeps is a warning; leaving a phase out, or adding one,
    is information (a chapter that reads the same run with fewer phases prints no warning)."""
    import logging

    out = tmp_path / "run"
    out.mkdir()
    for f in ("config.json", JOURNAL):
        (out / f).write_bytes((dkn_baseline.out_dir / f).read_bytes())
    with caplog.at_level(logging.INFO, logger="kn.runs.engine"):
        run(lm, tiny_facts(), out, steps=STEPS, phases=("locate", "verify"), progress=False)
        run(lm, tiny_facts(), out, steps=STEPS, phases=("locate", "verify", "degenerate"), progress=False)
    said = [r for r in caplog.records if "phases or their settings changed" in r.getMessage()]
    assert len(said) == 2 and all(r.levelno == logging.INFO for r in said), [r.levelname for r in said]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kn.runs.engine"):
        run(lm, tiny_facts(), out, steps=STEPS, phases=("locate", "verify", "degenerate"), dkn_candidates=5,
            progress=False)
    assert [r.levelno for r in caplog.records if "phases or their settings changed" in r.getMessage()] == [logging.WARNING]


def test_cli_selection_cut_short_resumes_at_the_next_relation(lm, tmp_path, monkeypatch, capsys):
    """A run killed while it probes which facts the model knows keeps the relations it finished: run
    again, it probes only the others and selects what an uninterrupted run selects, with the same
    counts; once the selection is whole, the partial file is gone; --fresh probes every relation."""
    import json

    from kn import cli
    from kn.data import select

    monkeypatch.setattr(cli, "_load", lambda args: lm)
    argv = ["run", "--data", "builtin", "--relations", "capital,currency,sport,birthplace", "--facts-per-relation", "2", "--known",
            "--steps", "2", "--phases", "locate", "--out"]
    monkeypatch.setenv("KN_SELECTION_CACHE", str(tmp_path / "whole-cache"))
    assert cli.main(argv + [str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "selection.json").read_text())
    monkeypatch.setenv("KN_SELECTION_CACHE", str(tmp_path / "cache"))
    real, probed = select._known, []

    def killed_at_the_third(pool, ids, *a, **k):
        if len(probed) == 2:
            raise KeyboardInterrupt  # what SIGINT does mid-probe
        probed.append(pool[ids[0]].relation)
        return real(pool, ids, *a, **k)

    monkeypatch.setattr(select, "_known", killed_at_the_third)
    assert cli.main(argv + [str(tmp_path / "cut")]) == 130
    assert "the relations whose known facts were found are kept: run the same command again" in capsys.readouterr().err
    [partial] = (tmp_path / "cache").glob("*.partial.json")
    assert sorted(json.loads(partial.read_text())["relations"]) == sorted(probed)
    first, probed[:] = list(probed), []
    monkeypatch.setattr(select, "_known", lambda pool, ids, *a, **k: probed.append(pool[ids[0]].relation) or
                        real(pool, ids, *a, **k))
    capsys.readouterr()
    assert cli.main(argv + [str(tmp_path / "cut")]) == 0
    assert "resuming the fact selection: 2 relations already probed" in capsys.readouterr().err
    assert sorted(probed) == sorted({"capital", "currency", "sport", "birthplace"} - set(first)) and len(probed) == 2
    resumed = json.loads((tmp_path / "cut" / "selection.json").read_text())
    assert resumed["fact_ids"] == whole["fact_ids"] and resumed["selection"] == whole["selection"]
    assert whole["selection"]["counts"]["en"]["known"] > 0 and not list((tmp_path / "cache").glob("*.partial.json"))
    probed[:] = []
    assert cli.main(argv + [str(tmp_path / "cut"), "--fresh"]) == 0 and len(probed) == 4


def test_cli_known_top_selects_the_facts_the_model_answers(lm, tmp_path, monkeypatch, capsys):
    """--known --known-top K: the facts whose gold is among the model's top K (counted here with kn.probe) on
    at least half their prompts, fewer than at the default top 10, each a selection of its own (key
    known_top, absent at the default); --known-top without --known is refused naming the fix."""
    import json

    from kn import cli, probe
    from kn.data import builtin
    from kn.data.prepare import prepare_fact

    monkeypatch.setattr(cli, "_load", lambda args: lm)
    relations = "capital,currency,sport,birthplace"
    argv = ["run", "--data", "builtin", "--relations", relations, "--known", "--steps", "2", "--phases", "locate",
            "--out"]
    assert cli.main(argv + [str(tmp_path / "top10")]) == 0
    top = 5  # the tiny model's top answer is never a gold: rank 1 would select nothing
    assert cli.main(argv + [str(tmp_path / "top"), "--known-top", str(top)]) == 0
    sel = {n: json.loads((tmp_path / n / "selection.json").read_text()) for n in ("top10", "top")}
    assert "known_top" not in sel["top10"]["key"] and sel["top"]["key"]["known_top"] == top
    want = set()
    for f in builtin():
        if f.relation in relations.split(",") and f.has("en") and (p := prepare_fact(f, lm, "en")) is not None:
            hits = [p.gold_id in {x.id for x in probe(lm, q, k=top)} for q in p.prompts]
            if p.usable and sum(hits) >= 0.5 * len(hits):
                want.add(p.fact_id)
    assert set(sel["top"]["fact_ids"]) == want and 0 < len(want) < len(sel["top10"]["fact_ids"])
    capsys.readouterr()
    assert cli.main([a for a in argv if a != "--known"] + [str(tmp_path / "no"), "--known-top", "1"]) != 0
    assert "add --known" in capsys.readouterr().err


def test_the_bar_says_how_far_a_later_phase_is(lm, tmp_path, capsys):
    """The bar counts the first phase's facts; a later phase's facts of a relation, which move no count,
    show in its text as done / to do (the edit phase's minutes per relation were silent)."""
    facts = tiny_facts().filter(ids=["capital/France", "capital/Italy"])
    run(lm, facts, tmp_path / "r", steps=2, phases=("locate", "verify"), progress=True)
    err = capsys.readouterr().err
    assert "capital: verify 1/2" in err and "capital: verify 2/2" in err
