"""A new run phase is one unit, defined here without editing any kn/ file: its settings (a frozen
dataclass), its records, its columns. It runs through `kn.run`, survives SIGKILL and resumes with
every fact done once, and its settings reach config.json, the CLI's flags and the run summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kn.runs import JOURNAL, load_run, run
from kn.runs.phases import PHASES, Phase, check_phase
from kn.runs.phases.base import record
from kn.runs.phases.locate import knowledge_neurons, located
from kn.runs.phases.setting import phase_settings, number, setting

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
STEPS = 2


@phase_settings
class ToySettings:
    """How the toy phase weighs a fact."""

    toy_factor: float = setting(1.0, "the toy phase's weight per knowledge neuron", check=number)
    toy_pause: float = setting(0.0, "seconds the toy phase sleeps per fact", check=number, scope="table")



class Toy(Phase):
    """Per located fact: its knowledge neurons' count times toy_factor."""

    name, fact_record, needs = "toy", "toy", ("locate",)
    Settings = ToySettings
    fact_columns = ("toy_weight",)
    relation_columns = ("toy_weight",)
    summary = (("toy_weight", "toy weight", ".1f"),)

    def wants(self, fact_id, state):
        rec = located(state, fact_id)
        return rec is not None and knowledge_neurons(state, fact_id, rec["relation"]) is not None

    def run_fact(self, lm, fact, state):
        time.sleep(self.settings.toy_pause)
        kns = knowledge_neurons(state, fact.fact_id, fact.relation)
        return record(self.fact_record, fact_id=fact.fact_id, relation=fact.relation,
                      weight=len(kns) * self.settings.toy_factor)

    def fact_row(self, fact_id, state):
        rec = state.get(self.fact_record, fact_id)
        return {"toy_weight": rec["weight"] if rec else None}

    def relation_row(self, relation, facts, state):
        return {"toy_weight": float(facts.toy_weight.dropna().sum())}


def tiny_facts():
    from kn.data.schema import Fact, FactSet

    pairs = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo")]
    templates = ["the capital of [X] is [Y]", "[X] capital city is [Y]", "in [X] the capital is [Y]",
                 "[X] has its capital in [Y]"]
    return FactSet([Fact(f"capital/{s}", "capital", {"en": s}, {"en": o}, {"en": templates}) for s, o in pairs], "tiny")


@pytest.fixture
def toy(monkeypatch):
    check_phase(Toy)
    monkeypatch.setitem(PHASES, "toy", Toy)
    return Toy


CHILD = textwrap.dedent("""
    import importlib.util, sys, torch
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("toy_phase", sys.argv[1])
    mod = sys.modules["toy_phase"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from kn.runs import run
    from kn.runs.phases import register
    from kn.testing import tiny_lm
    register(mod.Toy)
    run(tiny_lm("GPT-2"), mod.tiny_facts(), sys.argv[2], steps=%d, phases=("locate", "toy"), toy_factor=3.0,
        toy_pause=0.5, progress=False)
    print("finished")
""") % STEPS


def records(out: Path) -> list[dict]:
    return [json.loads(l) for l in (out / JOURNAL).read_text().splitlines() if l.strip()]


def test_a_phase_defined_here_survives_sigkill_and_resumes(toy, tmp_path):
    from kn.testing import kill_when, tiny_lm

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(HERE), str(out)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_when(child, lambda: (out / JOURNAL).exists() and b'{"type": "toy"' in (out / JOURNAL).read_bytes())
    partial = [r for r in records(out) if r["type"] == "toy"]
    assert 1 <= len(partial) < 4, "killed while the toy phase was part-way"
    res = run(tiny_lm("GPT-2"), tiny_facts(), out, steps=STEPS, phases=("locate", "toy"), toy_factor=3.0,
              toy_pause=0.5, progress=False)
    recs = records(out)
    toy_ids = [r["fact_id"] for r in recs if r["type"] == "toy"]
    located_ids = [r["fact_id"] for r in recs if r["type"] == "fact"]
    assert sorted(located_ids) == sorted(f.fact_id for f in tiny_facts())  # every fact once
    with_neurons = res.facts[res.facts.n_neurons.notna()]
    assert sorted(toy_ids) == sorted(with_neurons.fact_id) and len(toy_ids) == len(set(toy_ids))
    assert (with_neurons.toy_weight == 3.0 * with_neurons.n_neurons).all()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["settings"]["phases"] == ["locate", "toy"]
    assert cfg["settings"]["toy"] == {"toy_factor": 3.0, "toy_pause": 0.5}


def test_its_settings_change_its_numbers_and_reach_the_cli(toy, tmp_path, monkeypatch, capsys):
    from kn import cli
    from kn.testing import tiny_lm

    lm = tiny_lm("GPT-2")
    out = tmp_path / "run"
    a = run(lm, tiny_facts(), out, steps=STEPS, phases=("locate", "toy"), progress=False)
    n = len(records(out))
    b = run(lm, tiny_facts(), out, steps=STEPS, phases=("locate", "toy"), toy_factor=2.5, progress=False)
    new = records(out)[n:]
    assert {r["type"] for r in new} == {"toy"}  # only the toy records are redone
    assert (b.facts.toy_weight.dropna() == 2.5 * a.facts.toy_weight.dropna()).all() and a.facts.toy_weight.sum() > 0
    with pytest.raises(ValueError, match="toy_factor must be a number"):
        run(lm, tiny_facts(), out, steps=STEPS, phases=("locate", "toy"), toy_factor="x", progress=False)
    with pytest.raises(ValueError, match="toy_factor belong.*phase 'toy'.*does not do"):
        run(lm, tiny_facts(), out, steps=STEPS, toy_factor=2.0, progress=False)
    # the CLI: a flag per setting, with its help text; the summary prints its settings and its column
    monkeypatch.setattr(cli, "_load", lambda args: lm)
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "--toy-factor" in capsys.readouterr().out
    code = cli.main(["run", "--data", "builtin", "--relations", "P36", "--facts-per-relation", "2", "--steps", "2",
                     "--phases", "locate,toy", "--toy-factor", "4", "--out", str(tmp_path / "cli")])
    printed = capsys.readouterr().out
    assert code == 0 and "toy: toy_factor 4.0, toy_pause 0.0" in printed and "toy weight" in printed
    assert load_run(tmp_path / "cli").config["settings"]["toy"]["toy_factor"] == 4.0


# -- a phase's records over groups of facts from several relations ----------------------------------------
@phase_settings
class PairSettings:
    """Groups of the toy pairs phase."""

    pair_size: int = setting(2, "facts per group", check=number, scope="relation")


class Pairs(Phase):
    """Groups of `pair_size` located facts across relations, in fact order; each group's record lists its
    facts and the relations it saw located (every relation must be done before groups are made)."""

    name, group_record, needs = "pairs", "pair", ("locate",)
    Settings = PairSettings

    def groups(self, facts, state):
        ids = [f.fact_id for f in facts if located(state, f.fact_id) is not None]
        n = int(self.settings.pair_size)
        return [f"{n}:{i}" for i in range(len(ids) // n)]

    def run_group(self, lm, group, facts, state):
        n, i = map(int, group.split(":"))
        ids = [f.fact_id for f in facts if located(state, f.fact_id) is not None][i * n:(i + 1) * n]
        return record(self.group_record, group=group, facts=ids,
                      relations=sorted({located(state, f)["relation"] for f in ids}))


def two_relation_facts():
    from kn.data.schema import Fact, FactSet

    base = list(tiny_facts())
    langs = [Fact(f"lang/{s}", "language", {"en": s}, {"en": o}, {"en": ["in [X] people speak [Y]", "[X] speaks [Y]"]})
             for s, o in [("France", "French"), ("Germany", "German"), ("Italy", "Italian")]]
    return FactSet(base + langs, "tiny2")


def test_group_records_come_after_every_relation_once_and_follow_their_settings(monkeypatch, tmp_path):
    from kn.testing import tiny_lm

    check_phase(Pairs)
    monkeypatch.setitem(PHASES, "pairs", Pairs)
    lm, facts, out = tiny_lm("GPT-2"), two_relation_facts(), tmp_path / "run"
    run(lm, facts, out, steps=STEPS, min_prompts=1, phases=("locate", "pairs"), progress=False)
    recs = records(out)
    pairs = [r for r in recs if r["type"] == "pair"]
    last_fact = max(i for i, r in enumerate(recs) if r["type"] == "fact")
    assert pairs and all(recs.index(p) > last_fact for p in pairs)  # after every relation's facts
    assert [p["group"] for p in pairs] == [f"2:{i}" for i in range(len(facts) // 2)]
    assert {r for p in pairs for r in p["relations"]} == {"capital", "language"}  # a group spans relations
    grouped = [f for p in pairs for f in p["facts"]]
    assert len(set(grouped)) == len(grouped) == 2 * len(pairs) and set(grouped) <= {f.fact_id for f in facts}
    run(lm, facts, out, steps=STEPS, min_prompts=1, phases=("locate", "pairs"), progress=False)
    assert len(records(out)) == len(recs)  # resumed: nothing redone
    run(lm, facts, out, steps=STEPS, min_prompts=1, phases=("locate", "pairs"), pair_size=3, progress=False)
    new = records(out)[len(recs):]
    assert {r["type"] for r in new} == {"pair"} and [r["group"] for r in new] == [f"3:{i}" for i in range(len(facts) // 3)]
    assert json.loads((out / "config.json").read_text())["settings"]["pairs"] == {"pair_size": 3}
