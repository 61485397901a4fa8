"""Reliability at the edges (issue 33): bounded costs stated in the message, non-finite numbers refused
and never recorded, list-valued strings in the forms people type, prompts longer than the model's
positions refused, and data that does not exist an error."""
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

import kn
from kn import checks
from kn.testing import tiny_lm


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("GPT-2")


# -- costs ------------------------------------------------------------------------------------
def test_degenerate_sets_refuses_a_search_past_its_bound_with_the_cost(lm):
    from kn.degenerate import MAX_SETS, degenerate_sets, search_cost

    assert search_cost(20, 3) == math.comb(20, 2) + math.comb(20, 3) == 1330
    assert search_cost(20, 100) == 2 ** 20 - 1 - 20  # every subset of two or more
    with pytest.raises(checks.ArgumentError, match=r"max_size=100\) over 20 candidates may try 1,048,555 neuron sets"
                                                    r".*100,000 \(kn.degenerate.MAX_SETS\)"):
        degenerate_sets(lm, "Paris is the capital of", " France", max_size=100)  # before any attribution
    cands = [(0, i) for i in range(30)]
    assert search_cost(30, 4) <= MAX_SETS < search_cost(30, 5)
    with pytest.raises(checks.ArgumentError, match="over 30 candidates"):
        degenerate_sets(lm, "Paris is the capital of", " France", cands, max_size=5)
    degenerate_sets(lm, "Paris is the capital of", " France", cands[:4], max_size=100)  # 4 candidates: 11 sets


def test_run_settings_bound_the_sets_search_and_the_crosslingual_languages():
    from kn.crosslingual import MAX_CONDITIONS, n_conditions
    from kn.runs import RunSettings

    with pytest.raises(checks.ArgumentError, match="dkn_max_size=7 over 20 candidates may try"):
        RunSettings.make(phases="locate,degenerate,degeneracy", dkn_max_size=7)
    RunSettings.make(phases="locate,degenerate,degeneracy", dkn_max_size=7, dkn_candidates=10)
    assert n_conditions(24) <= MAX_CONDITIONS < n_conditions(25)
    langs = [f"l{i}" for i in range(25)]
    with pytest.raises(checks.ArgumentError, match="over 25 languages measure 1,250 neuron sets per fact .* at most 24"):
        RunSettings.make(phases="locate,crosslingual", languages=langs)
    RunSettings.make(phases="locate,crosslingual", languages=langs[:24])
    RunSettings.make(phases="locate", languages=langs)  # without the phase, no bound


def test_quadrature_steps_are_bounded_with_the_cost():
    from kn.quadrature import MAX_STEPS

    kn.IG(steps=MAX_STEPS, rule="gauss_legendre")
    with pytest.raises(ValueError, match=r"steps=3000 costs 3000 forward and backward passes.*MAX_STEPS"):
        kn.IG(steps=3000, rule="gauss_legendre")
    with pytest.raises(ValueError, match="MAX_STEPS"):
        kn.calibrate(tiny_lm("GPT-2"), [("Paris is the capital of", " France")], steps=[4, 5000])
    with pytest.raises(checks.ArgumentError, match="exact must be between 2 and 1000"):
        kn.calibrate(tiny_lm("GPT-2"), [("Paris is the capital of", " France")], exact=3000)


# -- numbers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_baseline_tensor_or_factor_is_refused(lm, bad):
    base = torch.zeros(lm.n_layers, lm.width)
    base[1, 5] = bad
    with pytest.raises(ValueError, match=r"baseline holds 1 non-finite value\(s\) \(first at \[layer, index\] \[1, 5\]"):
        kn.IG(baseline=base)
    with pytest.raises(checks.ArgumentError, match="factor must be finite"):
        with kn.amplify(lm, [(0, 0)], factor=bad):
            pass
    with pytest.raises(checks.ArgumentError, match="threshold must be finite"):
        kn.runs.RunSettings.make(threshold=bad)


def test_logistic_needs_a_penalty_and_finite_features():
    from kn.factcheck import Logistic

    with pytest.raises(checks.ArgumentError, match="l2 must be > 0, got 0"):
        Logistic(l2=0)
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([False, False, True, True])  # separable
    p = Logistic(l2=1e-6).fit(X, y).proba(X)
    assert np.isfinite(p).all() and (p[:2] < 0.5).all() and (p[2:] > 0.5).all()
    with pytest.raises(checks.ArgumentError, match="X holds 1 non-finite"):
        Logistic().fit(np.array([[0.0], [np.nan], [2.0], [3.0]]), y)


@pytest.mark.parametrize("q", [0, -1, 1.5, "2", True])
def test_likn_q_must_be_a_count_of_languages(q):
    from kn import likn

    sets = {"en": {"f": [(0, 1)]}, "fr": {"f": [(0, 1)]}}
    with pytest.raises(checks.ArgumentError, match="q must be"):
        likn.by_layer(sets, 2, q=q)
    with pytest.raises(checks.ArgumentError, match="q must be"):
        likn.likn_tables(sets, q=q)
    assert likn.by_layer(sets, 2, q=1).likn.tolist() == [1, 0]


def test_nothing_non_finite_is_written_to_a_recording(tmp_path):
    from kn import recording

    with pytest.raises(checks.ArgumentError, match="seconds must be finite"):
        recording.provenance("kn x", seconds=math.nan)
    with pytest.raises(checks.ArgumentError, match=r"settings\['threshold'\] is nan"):
        recording.provenance("kn x", settings={"threshold": math.nan})
    good = recording.provenance("kn x", seconds=1.0)
    dest = tmp_path / "rec"
    with pytest.raises(checks.ArgumentError, match=r"prov\['extra'\]\[1\] is inf"):
        recording.record(dest, {"t": pd.DataFrame({"a": [1.0]})}, {**good, "extra": [1.0, math.inf]})
    with pytest.raises(checks.ArgumentError, match="table 't', column 'a' holds 1 infinite value"):
        recording.record(dest, {"t": pd.DataFrame({"a": [1.0, -math.inf]})}, good)
    with pytest.raises(checks.ArgumentError, match="column 'l' holds 1 infinite"):
        recording.record(dest, {"t": pd.DataFrame({"l": [[1.0, math.inf], [2.0]]})}, good)
    assert not dest.exists()  # refused before anything is written
    recording.record(dest, {"t": pd.DataFrame({"a": [1.0, math.nan], "l": [[1.0, math.nan], [2.0]]})}, good)
    text = (dest / "t.csv").read_text() + (dest / "provenance.json").read_text()
    assert not re.search(r"\b(nan|-?inf(inity)?)\b", text, re.IGNORECASE), text
    json.loads((dest / "provenance.json").read_text())  # strict JSON
    back = recording.read(dest)["t"]
    assert math.isnan(back.a[1]) and back.l[0] == [1.0, None]  # missing, as missing


# -- lists of names ---------------------------------------------------------------------------
@pytest.mark.parametrize("value,names", [("a,b", ["a", "b"]), ("a, b", ["a", "b"]), (" a ,b ,", ["a", "b"]),
                                         (["a", " b"], ["a", "b"]), (("a",), ["a"]), ("gauss_legendre",
                                                                                     ["gauss_legendre"])])
def test_names_take_the_forms_people_type(value, names):
    assert checks.names(value, "x") == names


@pytest.mark.parametrize("value", ["", " , ", "a,,b", [], [""], 3, None, b"a,b", {"a": 1}])
def test_names_refuse_what_names_nothing(value):
    with pytest.raises(checks.ArgumentError, match="^x"):
        checks.names(value, "x")


def test_phases_languages_and_rules_as_typed(lm):
    from kn.runs import RunSettings

    assert RunSettings.make(phases="locate, verify").phases == ("locate", "verify")
    assert RunSettings.make(phases="locate").phases == ("locate",)
    assert RunSettings.make(languages="en, fr").languages == ("en", "fr")
    c = kn.calibrate(lm, [("Paris is the capital of", " France")], rules="gauss_legendre", steps=2, exact=4)
    assert {r for r, _ in (g[:2] for g in c.grid)} == {"gauss_legendre"}


def test_cli_phases_with_spaces(monkeypatch):
    from kn import cli

    seen = []
    monkeypatch.setattr(cli, "cmd_run", lambda args: seen.append(cli.run_settings(args)))
    assert cli.main(["run", "--phases", "locate, verify", "--out", "x"]) == 0
    assert cli.main(["run", "--phases", "locate,,verify", "--out", "x"]) == 2
    assert seen[0].phases == ("locate", "verify") and len(seen) == 1


# -- lengths and paths ------------------------------------------------------------------------
def test_a_prompt_longer_than_the_model_reads_is_refused(lm):
    from kn.tokens import max_positions

    assert max_positions(lm) == 64
    long = " ".join(["Paris"] * 80) + " is the capital of"
    for call in (lambda: kn.probe(lm, long), lambda: kn.answer_prob(lm, long, " France"),
                 lambda: kn.attribute(lm, long, " France", steps=2)):
        with pytest.raises(checks.ArgumentError, match=r"too long for .*: .* is 8\d tokens and the model reads at most "
                                                       r"64 positions"):
            call()
    bert = tiny_lm("BERT")
    with pytest.raises(checks.ArgumentError, match="at most 64 positions"):
        kn.probe(bert, " ".join(["Paris"] * 80) + " is the capital of [MASK].")
    roberta = tiny_lm("RoBERTa")  # positions offset by the padding index + 1
    assert max_positions(roberta) == 70 - roberta.model.config.pad_token_id - 1


@pytest.mark.parametrize("spec", ["pararel:{missing}", "bmlama:{missing}"])
def test_cli_coverage_on_a_folder_that_does_not_exist_fails(spec, tmp_path, monkeypatch, capsys):
    from kn import cli

    monkeypatch.setattr(cli, "_load", lambda args: pytest.fail("the model loads after the data"))
    assert cli.main(["coverage", "--data", spec.format(missing=tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


# -- a failed (fact, language) ----------------------------------------------------------------
def test_tables_build_without_a_failed_or_missing_fact_language_and_say_so(tmp_path, caplog):
    import logging

    from test_multilingual import STEPS, TEMPLATES, facts

    from kn.data.schema import Fact, FactSet
    from kn.runs import JOURNAL, load_run, run

    langs = ("en", "xx", "yy")
    portugal = Fact("capital/Portugal", "capital", {l: "Spain" for l in langs},
                    {"en": "Madrid", "xx": "Lisbon", "yy": "Madrid"},  # "Lisbon": not a word of the tiny tokenizer
                    {l: TEMPLATES[l] for l in langs})
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="kn.runs.phases.crosslingual"):
        res = run(tiny_lm("GPT-2"), FactSet([*facts(), portugal], "t"), out, languages=list(langs), steps=STEPS,
                  phases=("locate", "verify", "crosslingual", "crossedit"), progress=False)
    f = res.facts.set_index(["fact_id", "language"])
    assert f.error.notna().sum() == 1 and "Lisbon" in f.loc[("capital/Portugal", "xx"), "error"]
    t = res.crosslingual
    mine = t[t.fact_id == "capital/Portugal"]
    assert len(mine) and "xx" not in set(mine.measured) and not mine.source.str.contains("xx").any()
    assert "capital/Portugal" not in set(res.crosslingual_edits.fact_id)  # not located everywhere
    assert t.attrs["left_out"] == {"failed": 1, "not_done": 0}
    assert "crosslingual: built without 1 (fact, language) unit(s): 1 failed to locate" in caplog.text
    assert res.likn()[0].set_index("fact_id").loc["capital/Portugal", "languages_located"] == 2
    # a language never started (killed before it): every table builds from the journal, saying so
    records = [json.loads(line) for line in (out / JOURNAL).read_text().splitlines()]
    keep = [r for r in records if r.get("language") != "yy" and r.get("type") not in ("crosslingual", "crossedit")]
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_bytes((out / "config.json").read_bytes())
    (cut / JOURNAL).write_text("".join(json.dumps(r) + "\n" for r in keep))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kn.runs.phases.crosslingual"):
        part = load_run(cut)
    n = res.facts.fact_id.nunique()
    assert len(part.crosslingual) == 0 and part.crosslingual.attrs["left_out"] == {"failed": 1, "not_done": n}
    assert "not located yet" in caplog.text and not part.complete
    assert set(part.facts.language) == {"en", "xx"} and len(part.likn()[0]) == n and part.overlap()[1].loc["yy", "yy"] == 0
