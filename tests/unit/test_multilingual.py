"""Runs in several languages (one run, each (fact, language) a unit, facts aligned by id), the
language-independent neurons, and the cross-lingual phases."""
import json

import pandas as pd
import pytest

from kn import likn
from kn.data.schema import Fact, FactSet
from kn.runs import MultiRunResult, RunConfigError, RunResult, load_run, run
from kn.testing import tiny_lm

STEPS = 3
# three "languages" written in the tiny tokenizer's words, each with its own templates
TEMPLATES = {
    "en": ["the capital of [X] is [Y]", "[X] capital city is [Y]", "in [X] the capital is [Y]"],
    "xx": ["[X] and its capital city is [Y]", "the capital city of [X] is [Y]", "[X] is a country and its capital is [Y]"],
    "yy": ["in [X] the city is [Y]", "[X] capital is [Y]", "capital of [X] is [Y]"],
}
SPOKEN = {
    "en": ["[X] speaks [Y]", "the official language of [X] is [Y]", "in [X] the language is [Y]"],
    "xx": ["the language of [X] is [Y]", "[X] language is [Y]", "in [X] a language is [Y]"],
    "yy": ["[X] official language is [Y]", "in [X] was born the language [Y]", "[X] and its language [Y]"],
}
PAIRS = {"capital": (TEMPLATES, [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid")]),
         "language": (SPOKEN, [("France", "French"), ("Japan", "Japanese")])}


def facts(languages=("en", "xx", "yy")) -> FactSet:
    out = [Fact(f"{rel}/{s}", rel, {l: s for l in languages}, {l: o for l in languages},
                {l: ts[l] for l in languages}) for rel, (ts, pairs) in PAIRS.items() for s, o in pairs]
    out.append(Fact("capital/Japan", "capital", {"en": "Japan"}, {"en": "Tokyo"}, {"en": TEMPLATES["en"]}))
    return FactSet(out, "tiny-multilingual")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("GPT-2")


PHASES = ("locate", "verify", "crosslingual", "crossedit")


@pytest.fixture(scope="module")
def whole(lm, tmp_path_factory):
    return run(lm, facts(), tmp_path_factory.mktemp("ml"), languages=["en", "xx", "yy"], steps=STEPS, phases=PHASES,
               progress=False)


def test_one_run_with_a_unit_per_fact_and_language(lm, whole, tmp_path):
    assert isinstance(whole, RunResult) and whole.complete
    assert whole.languages == ["en", "xx", "yy"] and list(whole.runs) == ["en", "xx", "yy"]
    f = whole.facts
    assert len(f) == 18 and set(f.language) == {"en", "xx", "yy"}  # capital/Japan has no xx / yy version
    assert "capital/Japan" not in set(f.fact_id)
    assert list(f.columns[:3]) == ["fact_id", "language", "relation"]
    assert sorted(p.name for p in whole.out_dir.iterdir() if p.is_dir()) == []  # one directory, one journal
    # each language's neurons are those of a single-language run in that language
    one = run(lm, facts().filter(language=["en", "xx", "yy"]), tmp_path / "xx", language="xx", steps=STEPS,
              progress=False)
    assert whole.sets()["xx"] == {fid: one.fact_neurons(fid) for fid in one.located_facts()}
    pd.testing.assert_frame_equal(whole.runs["xx"].neurons.drop(columns="language"),
                                  one.neurons.drop(columns="language"))
    assert whole.runs["xx"].fact_queries("capital/France") == one.fact_queries("capital/France")
    with pytest.raises(ValueError, match="several languages"):
        whole.fact_queries("capital/France")
    loaded = load_run(whole.out_dir)
    assert isinstance(loaded, RunResult) and loaded.facts.equals(whole.facts)
    cfg = json.loads((whole.out_dir / "config.json").read_text())
    assert cfg["settings"]["languages"] == ["en", "xx", "yy"] and cfg["settings"]["attribution"]["steps"] == STEPS


def test_interrupted_run_resumes_to_the_same_tables(lm, whole, tmp_path):
    out = tmp_path / "cut"
    out.mkdir()
    lines = (whole.out_dir / "journal.jsonl").read_text().splitlines(keepends=True)
    (out / "config.json").write_bytes((whole.out_dir / "config.json").read_bytes())
    (out / "journal.jsonl").write_text("".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:7])  # a kill
    again = run(lm, facts(), out, languages=["en", "xx", "yy"], steps=STEPS, phases=PHASES, progress=False)
    for name in ("neurons", "prompts", "crosslingual", "crosslingual_edits"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(whole, name), obj=name)
    cols = [c for c in whole.facts.columns if c != "seconds"]
    pd.testing.assert_frame_equal(again.facts[cols], whole.facts[cols])
    recs = [json.loads(l) for l in (out / "journal.jsonl").read_text().splitlines()]
    units = [(r["fact_id"], r["language"]) for r in recs if r["type"] in ("fact", "crosslingual")]
    assert len(units) == len(set(units))  # nothing done twice


def test_resume_refuses_other_settings(lm, whole, tmp_path):
    with pytest.raises(RunConfigError, match="different configuration.*attribution.steps"):
        run(lm, facts(), whole.out_dir, languages=["en", "xx", "yy"], steps=STEPS + 1, phases=PHASES, progress=False)
    with pytest.raises(RunConfigError, match="different configuration.*languages"):
        run(lm, facts(), whole.out_dir, languages=["en", "xx"], steps=STEPS, phases=PHASES, progress=False)
    with pytest.raises(ValueError, match="has a version in 'en' and 'zz'"):
        run(lm, facts(), tmp_path / "none", languages=["en", "zz"], steps=STEPS, progress=False)
    with pytest.raises(ValueError, match="repeats"):
        run(lm, facts(), tmp_path / "rep", languages="en,en", steps=STEPS, progress=False)
    with pytest.raises(ValueError, match="not both"):
        run(lm, facts(), tmp_path / "both", languages=["en"], language="xx", progress=False)
    with pytest.raises(ValueError, match="phase 'crosslingual' needs \\['locate'\\]"):
        run(lm, facts(), tmp_path / "order", languages=["en", "xx"], phases=("crosslingual",), progress=False)


def test_fresh_moves_a_run_in_several_languages_aside(lm, tmp_path):
    out = tmp_path / "ml"
    run(lm, facts(), out, languages=["en", "xx"], steps=STEPS, phases=("locate",), progress=False)
    journal = (out / "journal.jsonl").read_bytes()
    again = run(lm, facts(), out, languages=["en", "xx"], steps=STEPS + 1, phases=("locate",), progress=False,
                resume=False)
    assert again.complete and again.config["settings"]["attribution"]["steps"] == STEPS + 1
    [aside] = tmp_path.glob("ml.replaced-*")
    assert (aside / "journal.jsonl").read_bytes() == journal
    assert load_run(aside).config["settings"]["attribution"]["steps"] == STEPS


def test_a_multilingual_run_of_an_older_kn_still_loads(lm, whole, tmp_path):
    """The layout kn wrote before (languages.json, a run per language) loads as a MultiRunResult
    with the same reading methods."""
    old = tmp_path / "old"
    for lang in ("en", "xx"):
        run(lm, facts(), old / lang, language=lang, steps=STEPS, progress=False)
    (old / "languages.json").write_text(json.dumps({"kind": "kn multilingual run", "format": 1, "languages": ["en", "xx"],
                                                    "settings": {}, "model": whole.config["model"], "data": {}}))
    res = load_run(old)
    assert isinstance(res, MultiRunResult) and res.languages == ["en", "xx"]
    assert res.sets()["xx"] == whole.sets()["xx"] and set(res.facts.language) == {"en", "xx"}
    with pytest.raises(ValueError, match="older kn"):
        run(lm, facts(), old, languages=["en", "xx"], steps=STEPS, progress=False)
    from kn import recording

    rec = recording.read(recording.record_run(old, tmp_path / "rec", "kn run (older kn)"))
    assert {"facts", "likn"} <= set(rec.tables) and set(rec["facts"].language) == {"en", "xx"}


SETS = {  # written by hand: {language: {fact: neurons}}
    "en": {"a": [(1, 2), (3, 4), (5, 6)], "b": [(1, 1)], "c": [(0, 0)]},
    "zh": {"a": [(1, 2), (3, 4)], "b": [], "c": [(0, 0), (2, 2)]},
    "fr": {"a": [(1, 2), (5, 6)], "b": [(1, 1), (2, 2)]},
}


def test_likn_tables_by_hand():
    facts, neurons = likn.likn_tables(SETS, {"a": "r", "b": "r", "c": "s"}, q=2)
    row = facts.set_index("fact_id")
    # a: in en, zh, fr; shared by all three: (1, 2); in >= 2 of 3: (1, 2), (3, 4), (5, 6)
    assert row.loc["a", "n_likn"] == 1 and row.loc["a", "n_likn_q"] == 3 and row.loc["a", "likn"] == "1:2"
    # b: zh located it with no neuron, so its languages are en and fr: (1, 1) in both
    assert row.loc["b", "languages_located"] == 3 and row.loc["b", "languages_with_neurons"] == 2
    assert row.loc["b", "n_likn"] == 1
    # c: en and zh share (0, 0)
    assert row.loc["c", "n_likn"] == 1 and row.loc["c", "n_neurons_union"] == 2
    a = neurons[neurons.fact_id == "a"].set_index(["layer", "index"])
    assert a.loc[(3, 4), "languages"] == "en,zh" and not a.loc[(3, 4), "in_all"] and a.loc[(1, 2), "in_all"]
    assert likn.likn_tables(SETS, q=3)[0].set_index("fact_id").loc["a", "n_likn_q"] == 1
    layers = likn.by_layer(SETS, 6).set_index("layer")
    assert layers.loc[1, "likn"] == 2 and layers.loc[2, "one_language"] == 2 and layers.loc[0, "at_least_2"] == 1
    with pytest.raises(ValueError, match="q must be"):
        likn.likn_tables(SETS, q=0)


def test_overlap_by_hand():
    jac, n = likn.overlap(SETS, ["en", "zh", "fr"])
    assert jac.loc["en", "zh"] == pytest.approx((2 / 3 + 1 / 2) / 2) and n.loc["en", "zh"] == 2  # b: zh empty
    assert jac.loc["en", "fr"] == pytest.approx((2 / 3 + 1 / 2) / 2) and n.loc["en", "fr"] == 2
    assert jac.loc["zh", "fr"] == pytest.approx(1 / 3) and n.loc["zh", "fr"] == 1
    assert jac.loc["en", "en"] == 1.0 and (jac == jac.T).all().all()


def test_multirun_likn_uses_the_runs_neurons(whole):
    facts_t, neurons_t = whole.likn()
    sets = whole.sets()
    for fid in facts_t.fact_id:
        per = [set(sets[l][fid]) for l in whole.languages if sets[l].get(fid)]
        expect = set.intersection(*per) if len(per) >= 2 else set()
        assert facts_t.set_index("fact_id").loc[fid, "n_likn"] == len(expect)
    jac, _ = whole.overlap()
    assert list(jac.index) == ["en", "xx", "yy"]


def test_sets_from_a_recorded_neurons_table_give_the_runs_layers_and_overlap(whole, tmp_path):
    import pandas as pd

    whole.neurons.to_csv(tmp_path / "neurons.csv", index=False)
    sets = likn.sets_from_table(pd.read_csv(tmp_path / "neurons.csv"))
    n_layers = whole.config["model"]["n_layers"]
    assert sum(map(len, sets.values())) > 0
    pd.testing.assert_frame_equal(likn.by_layer(sets, n_layers), whole.likn_by_layer())
    got, want = likn.overlap(sets, whole.languages), whole.overlap()
    pd.testing.assert_frame_equal(got[0], want[0])
    pd.testing.assert_frame_equal(got[1], want[1])


def test_select_facts_aligned_and_known_in_every_language(lm):
    from kn.data import select_facts

    assert len(select_facts(facts(), language=["en", "xx"])) == 6 and len(select_facts(facts(), language="en")) == 7
    everything = len(lm.tokenizer)
    assert len(select_facts(facts(), language=["en", "xx"], lm=lm, known=True, k=everything)) == 6
    assert len(select_facts(facts(), language=["en", "xx"], lm=lm, known=True, k=1, min_fraction=1.0)) < 6


def test_cli_languages(lm, tmp_path, monkeypatch, capsys):
    from kn import cli

    monkeypatch.setattr(cli, "_load", lambda args: lm)
    monkeypatch.setattr(cli, "_facts", lambda args, languages: facts())
    out = tmp_path / "cli"
    assert cli.main(["run", "--languages", "en,xx", "--steps", str(STEPS), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "en:" in text and "xx:" in text and text.count("mean over relations") == 2
    after_xx = text[text.index("\nxx:"):]
    assert after_xx.split("\n")[2].startswith("settings: language xx,")  # each block names its own language
    res = load_run(out)
    assert res.languages == ["en", "xx"] and len(res.facts) == 12
    journal = (out / "journal.jsonl").read_bytes()
    assert cli.main(["run", "--languages", "en,xx", "--steps", str(STEPS), "--out", str(out), "--fresh"]) == 0
    [aside] = tmp_path.glob("cli.replaced-*")  # moved aside, the selection.json the CLI wrote with it
    assert (aside / "journal.jsonl").read_bytes() == journal and (aside / "selection.json").exists()
    assert load_run(out).complete and (out / "selection.json").exists()
    assert cli.main(["run", "--languages", "en,xx", "--language", "en", "--out", str(tmp_path / "b")]) == 2
    assert "not both" in capsys.readouterr().err


def _p_zeroed(lm, prompt, answer, neurons):
    """P(answer) with `neurons` zeroed at the last position: plain torch hooks, written here."""
    import torch

    by_layer = {}
    for l, i in neurons:
        by_layer.setdefault(l, []).append(i)

    def hook(layer):
        def fn(module, args):
            x = args[0].clone()
            x[:, -1, by_layer[layer]] = 0
            return (x,)
        return fn

    handles = [lm.down_proj(l).register_forward_pre_hook(hook(l)) for l in by_layer]
    try:
        with torch.no_grad():
            ids = lm.tokenizer(prompt, return_tensors="pt").input_ids
            logits = lm.model(input_ids=ids).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return float(torch.softmax(logits.float(), -1)[lm.tokenizer.convert_tokens_to_ids(answer.strip())])


def test_crosslingual_conditions_against_plain_hooks(lm, whole, tmp_path):
    from kn import crosslingual as X

    t = whole.crosslingual
    sets = whole.sets()
    facts_with = [f for f in whole.facts.fact_id.unique() if sum(bool(sets[l].get(f)) for l in whole.languages) >= 2]
    assert set(t.fact_id) == set(facts_with) and len(facts_with) >= 2
    assert set(t.target) == {"related", "unrelated"}
    assert (t[t.target == "unrelated"].target_fact != t[t.target == "unrelated"].fact_id).all()
    # the reference code's bug fixed: the union condition counts both sets
    for fid in facts_with:
        have = [l for l in whole.languages if sets[l].get(fid)]
        a, b = have[:2]
        row = t[(t.fact_id == fid) & (t.condition == "union") & (t.source == f"{a}+{b}")].iloc[0]
        assert row.n_neurons == len(set(sets[a][fid]) | set(sets[b][fid]))
    # every row's suppressed P equals a recomputation with plain hooks
    for row in t.sample(6, random_state=0).itertuples():
        src = row.source
        if row.condition == "mono":
            neurons = sets[src][row.fact_id]
        elif row.condition == "union":
            a, b = src.split("+")
            neurons = set(sets[a][row.fact_id]) | set(sets[b][row.fact_id])
        else:
            neurons = set.intersection(*[set(sets[l][row.fact_id]) for l in whole.languages if sets[l].get(row.fact_id)])
        queries = whole.runs[row.measured].fact_queries(row.target_fact)
        mine = sum(_p_zeroed(lm, p, a, neurons) for p, a in queries) / len(queries)
        assert abs(mine - row.p_suppressed) < 1e-6 * max(1.0, mine)
    s = X.summary(t)
    assert {"likn", "mono", "union"} >= set(s.condition) and (s.facts > 0).all()
    assert (s.suppression_diff_low <= s.suppression_diff + 1e-12).all()
    assert (s.suppression_diff <= s.suppression_diff_high + 1e-12).all()


def test_crosslingual_settings_change_its_numbers_not_the_rest(lm, whole, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.json", "journal.jsonl"):
        (out / name).write_bytes((whole.out_dir / name).read_bytes())
    n = len((out / "journal.jsonl").read_text().splitlines())
    again = run(lm, facts(), out, languages=["en", "xx", "yy"], steps=STEPS, phases=PHASES, cross_amplify_factor=3.0,
                progress=False)
    new = [json.loads(l) for l in (out / "journal.jsonl").read_text().splitlines()[n:]]
    assert {r["type"] for r in new} == {"crosslingual"} and all(r["language"] == "*" for r in new)
    assert not again.crosslingual.p_amplified.equals(whole.crosslingual.p_amplified)
    pd.testing.assert_series_equal(again.crosslingual.p_suppressed, whole.crosslingual.p_suppressed)


def test_bootstrap_interval():
    import numpy as np
    from kn.stats import bootstrap_mean

    x = np.random.default_rng(1).normal(0.3, 1.0, 400)
    m, lo, hi = bootstrap_mean(x, seed=0)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert m == pytest.approx(x.mean()) and lo < m < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)  # the normal interval, for a mean of 400 normals
    assert bootstrap_mean([np.nan, 2.0]) == (2.0, 2.0, 2.0) and np.isnan(bootstrap_mean([])[0])


def test_crosslingual_edits_against_the_update_written_here(lm, whole, tmp_path):
    import copy

    import torch

    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    t = whole.crosslingual_edits
    out = tmp_path / "edits"  # the phase alone, on the run's records: the model comes back bit-identical
    out.mkdir()
    for name in ("config.json", "journal.jsonl"):
        (out / name).write_bytes((whole.out_dir / name).read_bytes())
    again = run(lm, facts(), out, languages=["en", "xx", "yy"], steps=STEPS, phases=PHASES, edit_lambda2=8.5,
                progress=False)
    assert all(torch.equal(v, state[k]) for k, v in lm.model.state_dict().items())  # restored bit-identically
    assert len(again.crosslingual_edits) == len(t)
    assert len(t) and set(t.neurons) == {"likn", "mono"} and set(t.measured) == set(whole.languages)
    sets = whole.sets()
    row = t[(t.neurons == "likn")].iloc[0]
    neurons = set.intersection(*[set(sets[l][row.fact_id]) for l in whole.languages if sets[l].get(row.fact_id)])
    assert row.n_neurons == len(neurons)
    # the update by hand, on a copy: v <- v - l1 |v| / |e_old| e_old + l2 |v| / |e_new| e_new
    other = copy.deepcopy(lm.model)
    tok = lm.tokenizer
    p0, a0 = whole.runs[row.edit_language].fact_queries(row.fact_id)[0]
    new_a = t[(t.fact_id == row.fact_id) & (t.measured == row.edit_language)].new.iloc[0]
    emb = other.get_input_embeddings().weight
    e_old, e_new = emb[tok.convert_tokens_to_ids(a0.strip())], emb[tok.convert_tokens_to_ids(new_a)]
    with torch.no_grad():
        for l, i in neurons:
            w = other.transformer.h[l].mlp.c_proj.weight  # GPT-2: Conv1D, value slot i is row i
            v = w[i].clone()
            w[i] = v - 1.0 * v.norm() / e_old.norm() * e_old + 8.0 * v.norm() / e_new.norm() * e_new
    p_new = []
    for p, a in whole.runs[row.measured].fact_queries(row.fact_id):
        with torch.no_grad():
            logits = other(input_ids=tok(p, return_tensors="pt").input_ids).logits[0, -1]
        p_new.append(float(torch.softmax(logits.float(), -1)[tok.convert_tokens_to_ids(row.new)]))
    assert abs(sum(p_new) / len(p_new) - row.p_new_after) < 1e-6


def test_localization_quality_side_by_side(lm, whole, tmp_path):
    from kn.quality import localization_quality
    from kn.stats import succ

    amig = run(lm, facts(), tmp_path / "amig", languages=["en", "xx", "yy"], steps=STEPS, baseline="amig",
               progress=False)
    q = localization_quality({"ig": whole, "amig": amig})
    assert list(zip(q.method, q.language))[:3] == [("ig", "en"), ("ig", "xx"), ("ig", "yy")] and len(q) == 6
    r = q.iloc[0]
    f = whole.runs["en"].facts
    f = f[f.suppression.notna() & f.control_other_suppression.notna()]
    assert r.facts == len(f)
    sup_rel = (f.p_suppressed - f.p_before).mean() / f.p_before.mean()  # the paper's ratio of means, by hand
    assert r.suppression_related == pytest.approx(sup_rel)
    assert r.suppression_diff == pytest.approx((f.suppression - f.control_other_suppression).mean())
    assert r.succ == pytest.approx(succ(r.suppression_related, r.suppression_unrelated, r.amplification_related,
                                        r.amplification_unrelated))
    assert succ(1.0, 0.0, 1.0, 1.0) == float("inf")
    # recorded by kn record, one run per method under a name: the same quality read back
    from kn import amig_recorded, quality, recording

    for res, method in ((whole, "ig-zero"), (amig, "amig")):
        recording.record_run(res.out_dir, tmp_path / "rec" / "tiny" / method, "kn run (test)")
    runs, recs = amig_recorded.recorded_runs(tmp_path / "rec")
    assert list(runs) == ["tiny"] and set(runs["tiny"]) == {"IG (zero)", "AMIG"} and len(recs["tiny"]) == 2
    back = localization_quality({"ig": runs["tiny"]["IG (zero)"], "amig": runs["tiny"]["AMIG"]})
    pd.testing.assert_frame_equal(back, q, check_dtype=False)
    c = quality.compare(q, "amig", "ig")
    assert list(c.language) == ["en", "xx", "yy"]
    assert list(c.higher_succ) == [bool(a > z) for a, z in zip(q.succ[3:], q.succ[:3])]


def test_a_multilingual_run_records_with_its_likn_and_crosslingual_tables(lm, whole, tmp_path):
    from kn import recording

    dest = recording.record_run(whole.out_dir, tmp_path / "rec", "kn run --languages en,xx,yy ...")
    rec = recording.read(dest)
    assert set(rec.tables) == {"relations", "facts", "neurons", "likn", "crosslingual", "crosslingual_edits"}
    assert len(rec["facts"]) == len(whole.facts) and set(rec["facts"].language) == {"en", "xx", "yy"}
    assert len(rec["crosslingual"]) == len(whole.crosslingual) and len(rec["likn"]) == len(whole.likn()[0])
    assert rec.provenance["run_config"]["settings"]["languages"] == ["en", "xx", "yy"] and rec.provenance["started"]


def test_coverage_per_language(lm):
    from kn.data.coverage import coverage

    extra = [Fact("capital/Rome-first", "capital", {"en": "Italy"}, {"en": "Rome"}, {"en": ["[Y] is the capital of [X]"]}),
             Fact("capital/Lisbon", "capital", {"en": "Portugal"}, {"en": "Lisbon"}, {"en": ["the capital of [X] is [Y]"]}),
             Fact("capital/two", "capital", {"en": "Japan"}, {"en": "Tokyo city"}, {"en": ["the capital of [X] is [Y]"]})]
    fs = facts() + FactSet(extra)
    everything = len(lm.tokenizer)
    c = coverage(fs, lm, ["en", "xx"], k=everything).set_index("language")
    # en: 7 facts + 3: one has no object-last template, "Lisbon" is not in the tiny vocabulary, one answer is 2 tokens
    assert c.loc["en", ["facts", "no_prompt", "unrepresentable", "usable", "single_token", "multi_token"]].tolist() == \
        [10, 1, 1, 8, 7, 1]
    assert c.loc["en", "known"] == 8 and c.loc["xx", "facts"] == 6 and c.loc["xx", "known_share"] == 1.0
    assert coverage(fs, lm, ["en"], k=1, min_fraction=1.0, sample=3).loc[0, "probed"] == 3


def test_cli_coverage_records_the_table(lm, tmp_path, monkeypatch, capsys):
    import pandas as pd

    import kn.data
    from kn import cli
    from kn.data.coverage import coverage

    loads = []
    monkeypatch.setattr(cli, "_load", lambda args: loads.append(args) or lm)
    monkeypatch.setattr(kn.data, "load", lambda spec, languages=None, relations=None: facts())
    mine = tmp_path / "mine"  # a user's folder: refused before the model loads, left as it was
    mine.mkdir()
    (mine / "coverage.csv").write_text("language,known\nen,1\n")
    assert cli.main(["coverage", "--data", "bmlama:somewhere", "--record", str(mine)]) == 2
    assert "did not record: coverage.csv" in capsys.readouterr().err and not loads
    assert [p.name for p in mine.iterdir()] == ["coverage.csv"] and "en,1" in (mine / "coverage.csv").read_text()
    dest = tmp_path / "rec"
    assert cli.main(["coverage", "--data", "bmlama:somewhere", "--languages", "en,xx", "--sample", "3",
                     "--record", str(dest)]) == 0
    assert "known_share" in capsys.readouterr().out
    got = pd.read_csv(dest / "coverage.csv")
    want = coverage(facts(), lm, ["en", "xx"], sample=3)
    assert got.language.tolist() == ["en", "xx"] and got.probed.tolist() == [3, 3]
    assert got.known.tolist() == want.known.tolist() and got.single_token.tolist() == want.single_token.tolist()
    prov = json.loads((dest / "provenance.json").read_text())
    assert prov["settings"]["languages"] == ["en", "xx"] and prov["command"].startswith("kn coverage")
    assert prov["started"] is not None and prov["started"] <= prov["recorded"]


# -- a language whose templates all put the object mid-sentence (verb-final: ja, ko, tr) ---------------
VERB_FINAL = ["[X] and [Y] is the capital city .", "in [X] , [Y] is the capital", "[X] and its capital [Y] is a city"]


def with_verb_final(n_usable: int = 0) -> FactSet:
    """The capital facts in en and in "vf", whose templates have the object mid-sentence; the first
    `n_usable` of them also get an object-last "vf" template."""
    out = []
    for i, (s, o) in enumerate(PAIRS["capital"][1]):
        vf = VERB_FINAL + (["capital of [X] is [Y]"] if i < n_usable else [])
        out.append(Fact(f"capital/{s}", "capital", {"en": s, "vf": s}, {"en": o, "vf": o},
                        {"en": TEMPLATES["en"], "vf": vf}, distractors={l: ["Tokyo", "London"] for l in ("en", "vf")}))
    return FactSet(out, "tiny-verb-final")


def test_no_fact_usable_in_a_language_says_so_per_language(lm, tmp_path):
    from kn.checks import ArgumentError
    from kn.data import explain, select_facts

    everything = len(lm.tokenizer)
    chosen = select_facts(with_verb_final(), language=["en", "vf"], lm=lm, known=True, k=everything)
    assert len(chosen) == 0
    sel = chosen.info["selection"]
    assert sel["counts"]["vf"] == {"facts": 4, "usable": 0, "no_prompt": 4, "unrepresentable": 0, "probed": 0,
                                   "known": 0}
    assert sel["counts"]["en"]["usable"] == 4
    text = explain(sel)
    assert "vf: 4 facts, 0 usable (4 without a template the model can take (none has its object last))" in text
    assert "leave out vf" in text and "sentence=True" in text and "known=True" not in text
    assert "en: 4 facts, 4 usable, none probed (no fact usable in every language)" in text
    with pytest.raises(ArgumentError, match=r"facts is empty: 0 facts selected .*vf: 4 facts, 0 usable"):
        run(lm, chosen, tmp_path / "empty", languages=["en", "vf"], steps=STEPS, progress=False)
    # facts given directly: refused before anything is written, with the same counts
    with pytest.raises(ArgumentError, match=r"no fact can be asked of tiny-GPT-2 in every one of en, vf: .*"
                                            r"en: 4 facts, 4 usable; vf: 4 facts, 0 usable"):
        run(lm, with_verb_final(), tmp_path / "refused", languages=["en", "vf"], steps=STEPS, progress=False)
    assert not (tmp_path / "refused").exists()


def test_some_facts_usable_everywhere_run_with_a_warning(lm, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        res = run(lm, with_verb_final(n_usable=1), tmp_path / "part", languages=["en", "vf"], steps=STEPS,
                  min_prompts=1, progress=False)
    assert "1 of 4 facts can be asked of tiny-GPT-2 in every language" in caplog.text and "vf: 4 facts, 1 usable" in caplog.text
    f = res.runs["vf"].facts
    assert f.error.notna().sum() == 3 and res.runs["en"].facts.error.isna().all()


def test_sentence_target_makes_a_verb_final_language_usable(lm, tmp_path):
    from kn.data import select_facts

    everything = len(lm.tokenizer)
    chosen = select_facts(with_verb_final(), language=["en", "vf"], lm=lm, known=True, k=everything, sentence=True)
    counts = chosen.info["selection"]["counts"]
    assert counts["vf"]["usable"] == 4 and counts["vf"]["probed"] == counts["en"]["known"]
    facts_ = with_verb_final()
    res = run(lm, facts_, tmp_path / "vf", languages=["en", "vf"], steps=STEPS, sentence=True, min_prompts=1,
              phases=PHASES, progress=False)
    assert res.complete and res.facts.error.isna().all()
    e = res.crosslingual_edits  # the cross-lingual edits name objects, a sentence target's tail aside
    assert len(e) and set(e.old) | set(e.new) <= {"Paris", "Berlin", "Rome", "Madrid"}
    p = res.prompts
    assert set(p[p.language == "en"].target) == {"next_token"} and set(p[p.language == "vf"].target) == {"sentence"}
    (prompt, answer), *_ = res.runs["vf"].fact_queries("capital/France")
    assert (prompt, answer, answer.tail) == ("France and", " Paris is the capital city .", " is the capital city .")
    # the recorded p_before is the probability of the sentence from the object on
    assert p[p.language == "vf"].p_before.iloc[0] == pytest.approx(kn_answer_prob(lm, prompt, answer), rel=1e-5)
    # the default run's records are unchanged by the new setting: its keys are those of a run without it
    assert json.loads((res.out_dir / "config.json").read_text())["settings"]["locate"]["sentence"] is True


def kn_answer_prob(lm, prompt, answer):
    import kn

    return kn.answer_prob(lm, prompt, answer)


def test_cli_names_the_languages_and_the_fix(lm, tmp_path, monkeypatch, capsys):
    from kn import cli

    monkeypatch.setattr(cli, "_load", lambda args: lm)
    monkeypatch.setattr(cli, "_facts", lambda args, languages: with_verb_final())
    argv = ["run", "--languages", "en,vf", "--steps", str(STEPS), "--known", "--out", str(tmp_path / "cli")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "vf: 4 facts, 0 usable" in err and "kn run / kn coverage --sentence" in err
    argv = [a for a in argv if a != "--known"] + ["--sentence"]  # a random model knows nothing in its top 10
    argv[argv.index("--out") + 1] = str(tmp_path / "cli2")
    assert cli.main(argv) == 0 and "vf:" in capsys.readouterr().out


def test_coverage_with_sentence_targets(lm):
    from kn.data.coverage import coverage

    fs = with_verb_final()
    everything = len(lm.tokenizer)
    before = coverage(fs, lm, ["en", "vf"], k=everything).set_index("language")
    assert before.loc["vf", ["usable", "usable_share", "no_prompt"]].tolist() == [0, 0.0, 4]
    assert before.loc["en", "usable_share"] == 1.0 and before.loc["en", "sentence_target"] == 0
    after = coverage(fs, lm, ["en", "vf"], k=everything, sentence=True).set_index("language")
    assert after.loc["vf", ["usable", "usable_share", "sentence_target", "probed"]].tolist() == [4, 1.0, 4, 4]
    # vf's known: each prompt's gold sentence above both distractors' (a random model: some, not by the top-k)
    from kn.data import prepare as P
    from kn.probing import answer_logprob

    def score(q, answers):
        return [answer_logprob(lm, q, a) for a in answers]

    want = sum(sum(P.margin(q, a, p.distractors, score) > 0 for q, a in zip(p.prompts, p.answers)) >= 0.5 * len(p.prompts)
               for p in (P.prepare_fact(f, lm, "vf", sentence=True) for f in fs))
    assert after.loc["vf", "known"] == want


def test_cli_coverage_sentence(lm, monkeypatch, capsys):
    import kn.data
    from kn import cli

    monkeypatch.setattr(cli, "_load", lambda args: lm)
    monkeypatch.setattr(kn.data, "load", lambda spec, languages=None, relations=None: with_verb_final())
    assert cli.main(["coverage", "--data", "bmlama:somewhere", "--languages", "en,vf", "--no-probe"]) == 0
    before = capsys.readouterr().out
    assert cli.main(["coverage", "--data", "bmlama:somewhere", "--languages", "en,vf", "--no-probe", "--sentence"]) == 0
    after = capsys.readouterr().out
    assert "sentence targets" in after and "sentence targets" not in before
    row = lambda text: next(l.split() for l in text.splitlines() if l.split()[:1] == ["vf"])  # noqa: E731
    assert row(before)[1:5] == ["4", "4", "0", "0"] and row(after)[1:5] == ["4", "0", "0", "4"]


def test_a_language_with_no_usable_fact_is_left_out_and_said(lm):
    from kn.data import select_in_languages

    three = FactSet([Fact(f.fact_id, f.relation, {**f.subject, "e2": f.subject["en"]}, {**f.object, "e2": f.object["en"]},
                          {**f.templates, "e2": f.templates["en"]}) for f in with_verb_final()], "three")
    everything = len(lm.tokenizer)
    chosen, kept, why = select_in_languages(three, ["en", "vf", "e2"], lm, known=True, k=everything)
    assert kept == ["en", "e2"] and len(chosen) == 4 and "vf: 4 facts, 0 usable" in why and "leave out vf" in why
    chosen, kept, why = select_in_languages(three, ["en", "e2"], lm, known=True, k=everything)
    assert (kept, why, len(chosen)) == (["en", "e2"], "", 4)
    chosen, kept, why = select_in_languages(three, ["vf"], lm, known=True, k=everything)  # nothing to keep
    assert len(chosen) == 0 and kept == ["vf"] and "vf: 4 facts, 0 usable" in why


def test_verify_controls_in_a_verb_final_language_are_sentence_targets_too(lm, tmp_path):
    """The other-relation control of a fact in a verb-final language is prepared as the run's own facts
    are (sentence targets): without that, no fact of that language can be a control."""
    spoken_vf = ["[X] and [Y] is the language .", "in [X] , [Y] is the official language"]
    two = FactSet(list(with_verb_final()) + [
        Fact(f"language/{s}", "language", {"en": s, "vf": s}, {"en": o, "vf": o}, {"en": SPOKEN["en"], "vf": spoken_vf})
        for s, o in PAIRS["language"][1]], "two")
    res = run(lm, two, tmp_path / "vf2", languages=["en", "vf"], steps=STEPS, sentence=True, min_prompts=1,
              phases=("locate", "verify"), progress=False)
    vf = res.runs["vf"].facts
    with_neurons = vf[vf.n_neurons > 0]
    assert len(with_neurons) and with_neurons.control_other_fact.notna().all(), vf[["fact_id", "control_other_fact"]]
    assert with_neurons.control_other_suppression.notna().all()
