"""kn.recording: a finished run recorded as CSV tables with provenance reads back equal; unfinished
runs and empty recordings are refused."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from kn import recording
from kn.data.schema import Fact, FactSet
from kn.runs import CONFIG, JOURNAL, load_run, run
from kn.testing import tiny_lm

TEMPLATES = ["the capital of [X] is [Y]", "[X] capital city is [Y]", "in [X] the capital is [Y]",
             "[X] has its capital in [Y]"]
PAIRS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome")]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    torch.set_num_threads(1)
    facts = FactSet([Fact(f"capital/{s}", "capital", {"en": s}, {"en": o}, {"en": TEMPLATES}) for s, o in PAIRS],
                    "tiny")
    out = tmp_path_factory.mktemp("run")
    run(tiny_lm("GPT-2"), facts, out, steps=3, progress=False)
    return out


def test_recorded_tables_read_back_equal_to_the_run(finished, tmp_path):
    dest = recording.record_run(finished, tmp_path / "rec", "kn run --data tiny", seconds=12.34,
                                kn_commit="abc1234")
    rec = recording.read(dest)
    res = load_run(finished)
    for name in recording.RUN_TABLES:
        ours, theirs = rec[name], getattr(res, name)
        assert list(ours.columns) == list(theirs.columns)
        assert len(ours) == len(theirs) > 0
        num = theirs.select_dtypes("number").columns
        pd.testing.assert_frame_equal(ours[num].reset_index(drop=True), theirs[num].reset_index(drop=True),
                                      check_dtype=False, rtol=1e-12)
    p = rec.provenance
    assert p["command"] == "kn run --data tiny" and p["commit"] == "abc1234" and p["seconds"] == 12.3
    assert p["run_config"]["model"] == res.config["model"]
    assert p["machine"]["cores"] and p["versions"]["torch"] == torch.__version__
    assert rec.summary()["kn commit"] == "abc1234"


def test_a_study_recorded_in_parts_reads_as_one(finished, tmp_path):
    """read_study / studies: `NAME/PART/` recordings read as one, each table the parts' rows with their
    part, the provenance per part; a recording in one piece reads as `read` does; nothing: a clear error."""
    for part, c in (("b", "bbb2222"), ("a", "aaa1111")):
        recording.record_run(finished, tmp_path / "root" / "study" / part, f"kn run {part}", kn_commit=c)
    recording.record_run(finished, tmp_path / "root" / "whole", "kn run whole", kn_commit="ccc3333")
    (tmp_path / "root" / "empty").mkdir()
    found = recording.studies(tmp_path / "root")
    assert list(found) == ["study", "whole"]
    one, study = recording.read(tmp_path / "root" / "whole"), found["study"]
    for name, table in one.tables.items():
        got = study[name]
        assert len(got) == 2 * len(table) and list(got.part) == ["a"] * len(table) + ["b"] * len(table)
        pd.testing.assert_frame_equal(got[got.part == "b"].drop(columns="part").reset_index(drop=True), table)
    assert list(study.summaries().loc["kn commit"]) == ["aaa1111", "bbb2222"]
    assert list(found["whole"].summaries().loc["command"]) == ["kn run whole"]
    with pytest.raises(FileNotFoundError, match="PART/provenance.json"):
        recording.read_study(tmp_path / "root" / "empty")


def test_an_unfinished_run_is_refused(finished, tmp_path):
    part = tmp_path / "part"
    part.mkdir()
    (part / CONFIG).write_text((finished / CONFIG).read_text())
    lines = (finished / JOURNAL).read_text().splitlines(keepends=True)
    (part / JOURNAL).write_text(lines[0])
    with pytest.raises(ValueError, match="not finished"):
        recording.record_run(part, tmp_path / "rec", "x")
    assert not (tmp_path / "rec").exists()


def test_reading_a_directory_without_provenance_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="provenance.json"):
        recording.read(tmp_path)
    with pytest.raises(ValueError, match="at least one table"):
        recording.record(tmp_path / "x", {}, {})


def test_commit_names_this_checkout():
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=recording.Path(recording.__file__).parent)
    if head.returncode:
        pytest.skip("not a git checkout")
    assert recording.commit().split("+")[0] == head.stdout.strip()


def test_cli_records_a_run(finished, tmp_path):
    dest = tmp_path / "cli"
    out = subprocess.run([sys.executable, "-m", "kn.cli", "record", str(finished), str(dest), "--command", "c"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads((dest / "provenance.json").read_text())["tables"]["facts"] == len(PAIRS)


def test_a_format_1_run_loads_and_records(tmp_path):
    """A run directory written by the code before kn.runs (the book's recorded runs) still loads and records."""
    from format1 import write_format1_run

    old = write_format1_run(tmp_path / "old")
    res = load_run(old)
    assert res.complete and res.config["format"] == 1
    f = res.facts.set_index("fact_id")
    assert list(f.index) == ["capital/France", "capital/Germany", "capital/Portugal", "language/Italy"]
    assert f.error.dropna().to_dict() == {
        "capital/Germany": "verify: RuntimeError: boom",
        "capital/Portugal": "ValueError: the tokenizer cannot represent the answer 'Lisbon'"}
    assert f.loc["capital/France", "suppression"] == pytest.approx((0.6 - 0.9) / 0.9)
    assert f.loc["capital/France", "control_same_fact"] == "capital/Germany"
    assert f.loc["capital/France", "control_other_amplification"] == pytest.approx(0.3 / 1.5)
    assert f.n_neurons.tolist() == [2, 1, pd.NA, 0] and f.seconds.sum() == 5.0
    r = res.relations.set_index("relation")
    expected = {"facts": 3, "errors": 2, "facts_located": 2, "facts_with_neurons": 2, "facts_verified": 1,
                "neurons_per_fact": 1.5, "share": 0.7, "relation_neurons": 2, "max_facts_sharing": 2}
    assert r.loc["capital", list(expected)].to_dict() == expected
    assert r.loc["capital", "suppression"] == pytest.approx((0.6 - 0.9) / 0.9)
    assert r.loc["language", "facts_with_neurons"] == 0 and r.loc["language", "share"] == 0.65
    assert res.neurons[["fact_id", "layer", "index", "n_prompts_found", "n_facts_sharing"]].values.tolist() == [
        ["capital/France", 2, 5, 3, 2], ["capital/France", 2, 7, 2, 1], ["capital/Germany", 2, 5, 3, 2]]
    assert res.prompts.p_suppressed.tolist()[:3] == [0.1, 0.2, 0.3] and len(res.prompts) == 9
    rec = recording.read(recording.record_run(old, tmp_path / "rec", "kn run (format 1)", kn_commit="abc1234"))
    assert rec.provenance["run_config"]["settings"]["method"] == "ig" and rec.provenance["seconds"] == 5.0
    assert rec["facts"].fact_id.tolist() == list(f.index) and len(rec["neurons"]) == 3


def files(folder) -> dict:
    """Every file in `folder` (one level), by name, as bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_folder_with_a_users_files_is_refused_untouched(finished, tmp_path, capsys):
    from kn import cli

    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "facts.csv").write_text("fact,mine\nParis,yes\n")
    (dest / "provenance.json").write_text('{"author": "me", "tables": {"facts": 1}}')
    before = files(dest)
    with pytest.raises(ValueError) as err:
        recording.record_run(finished, dest, "kn run")
    assert ("holds files kn did not record: facts.csv, provenance.json (its provenance.json is not a kn "
            "recording's)") in str(err.value) and "choose another destination" in str(err.value)
    with pytest.raises(ValueError, match="facts.csv, provenance.json"):
        recording.record(dest, {"x": pd.DataFrame({"a": [1]})}, {})
    assert cli.main(["record", str(finished), str(dest), "--command", "c"]) == 2
    assert "did not record: facts.csv, provenance.json" in capsys.readouterr().err
    assert files(dest) == before
    (dest / "provenance.json").unlink()  # kn's fields but a user's CSV: still not a recording of kn's
    (dest / "provenance.json").write_text('{"command": "c", "commit": "x", "tables": {"facts": 1, "gone": 2}}')
    with pytest.raises(ValueError, match="facts.csv, provenance.json"):
        recording.record_run(finished, dest, "kn run")


def test_records_into_an_empty_folder_and_again_into_its_own(finished, tmp_path):
    dest = tmp_path / "rec"
    dest.mkdir()
    recording.record_run(finished, dest, "first", kn_commit="abc")
    prov = json.loads((dest / "provenance.json").read_text())
    assert prov["kind"] == "kn recording" and prov["command"] == "first"
    assert prov["files"] == sorted(p.name for p in dest.iterdir())  # every file it wrote, nothing else
    assert set(prov["files"]) == {"facts.csv", "neurons.csv", "relations.csv", "provenance.json"}
    recording.record_run(finished, dest, "second", kn_commit="abc")  # its own folder: replaced
    assert recording.read(dest).provenance["command"] == "second"
    fewer = recording.record(dest, {"facts": recording.read(dest)["facts"]}, recording.provenance("third"))
    assert sorted(p.name for p in fewer.iterdir()) == ["facts.csv", "provenance.json"]  # its stale tables gone
    assert recording.read(dest).provenance["files"] == ["facts.csv", "provenance.json"]
    (dest / "notes.txt").write_text("mine")
    before = files(dest)
    with pytest.raises(ValueError, match=r"did not record: notes\.txt\."):
        recording.record_run(finished, dest, "fourth")
    assert files(dest) == before
    cut = tmp_path / "cut"  # a recording killed after its provenance.json.tmp: still kn's
    cut.mkdir()
    (cut / "provenance.json.tmp").write_text("{")
    recording.record_run(finished, cut, "again")
    assert "provenance.json.tmp" not in {p.name for p in cut.iterdir()}


def test_the_books_recordings_from_before_the_marker_are_kn_s(repo_root, tmp_path):
    """book/results/ recordings (written before "kind" and "files"): each is recognised as kn's,
    with exactly its files; a copy reads back and is re-recorded in place."""
    import shutil

    found = sorted((repo_root / "book" / "results").rglob("provenance.json"))
    assert found
    for prov in found:
        assert recording.check_dest(prov.parent) == {p.name for p in prov.parent.iterdir()}, prov.parent
    before = [p for p in found if "kind" not in json.loads(p.read_text())]  # those still from before the marker
    assert before
    copy = shutil.copytree(before[0].parent, tmp_path / "copy")
    old = recording.read(copy)
    assert "kind" not in old.provenance and old.tables
    recording.record(copy, old.tables, {k: v for k, v in old.provenance.items() if k != "tables"})
    new = recording.read(copy)
    assert new.provenance["kind"] == "kn recording" and new.tables.keys() == old.tables.keys()
    for name in old.tables:
        pd.testing.assert_frame_equal(new[name], old[name])


def test_the_run_writes_its_own_provenance(tmp_path, monkeypatch, capsys):
    """kn run keeps each session (command as given, commit, seconds) in config.json; kn record takes the
    command, the commit at the run's start and the seconds from there, and refuses another command."""
    from kn import cli
    from kn.runs.sessions import of as sessions_of

    lm = tiny_lm("GPT-2")
    monkeypatch.setattr(cli, "_load", lambda args: lm)
    out = tmp_path / "run"
    argv = ["run", "--data", "builtin", "--relations", "P36", "--facts-per-relation", "2", "--steps", "2",
            "--phases", "locate,degenerate", "--dkn-candidates", "4", "--out", str(out)]
    assert cli.main(argv) == 0 and cli.main(argv) == 0  # run, then resume (a no-op session)
    sessions = sessions_of(load_run(out).config)
    assert [s["command"] for s in sessions] == ["kn " + " ".join(argv)] * 2
    assert all(s["commit"] == recording.commit() and s["seconds"] >= 0 and s["finished"] for s in sessions)
    assert cli.main(["record", str(out), str(tmp_path / "rec")]) == 0
    prov = recording.read(tmp_path / "rec").provenance
    assert prov["command"] == "kn " + " ".join(argv) and prov["commit"] == sessions[0]["commit"]
    assert prov["seconds"] == pytest.approx(sum(s["seconds"] for s in sessions), abs=0.2)
    assert prov["started"] == sessions[0]["started"] and len(prov["sessions"]) == 2
    assert {"facts", "relations", "neurons", "degenerate_pairs"} <= set(prov["tables"])  # the phases' own tables too
    changed = argv[:-4] + ["--dkn-candidates", "5", "--out", str(out)]  # resumed with another setting
    assert cli.main(changed) == 0 and cli.main(["record", str(out), str(tmp_path / "rec2")]) == 0
    prov = recording.read(tmp_path / "rec2").provenance
    assert prov["command"] == "kn " + " ".join(changed) and len(prov["sessions"]) == 3  # the settings it holds
    assert prov["run_config"]["settings"]["degenerate"]["dkn_candidates"] == 5
    capsys.readouterr()
    assert cli.main(["record", str(out), str(tmp_path / "rec2"), "--command", "typed by hand"]) == 2
    assert "recorded the command that made it" in capsys.readouterr().err
    api = tmp_path / "api"
    run(lm, kn_facts(), api, steps=2, phases=("locate",), progress=False)  # the API, without command=
    with pytest.raises(ValueError, match="recorded no command"):
        recording.record_run(api, tmp_path / "rec3")
    assert recording.read(recording.record_run(api, tmp_path / "rec3", "my script")).provenance["command"] == "my script"


def kn_facts():
    return FactSet([Fact(f"capital/{s}", "capital", {"en": s}, {"en": o}, {"en": TEMPLATES}) for s, o in PAIRS], "tiny")


def test_list_and_text_cells_read_back_as_written(tmp_path):
    """A list-valued column comes back as lists, a text column holding "true" / "1" as text, not a bool
    or a number; numbers stay numbers."""
    df = pd.DataFrame({"kind": ["true", "false"], "code": ["1", "007"], "neurons": [[[3, 4]], []],
                       "plan": [(1.5, 2.0), (0.0,)], "p": [0.25, float("nan")]})
    rec = recording.read(recording.record(tmp_path / "rec", {"t": df}, recording.provenance("test")))
    back = rec["t"]
    assert back.kind.tolist() == ["true", "false"] and back.code.tolist() == ["1", "007"]
    assert back.neurons.tolist() == [[[3, 4]], []] and back.plan.tolist() == [[1.5, 2.0], [0.0]]
    assert back.p.iloc[0] == 0.25 and back.p.isna().iloc[1]


TERM_CHILD = """
import sys, time, torch
torch.set_num_threads(1)
from kn import cli
from kn.runs.phases import locate as L
from kn.testing import tiny_lm

def slow(f):
    def g(*a, **k):
        time.sleep(0.3)
        return f(*a, **k)
    return g

L.batch_scores = slow(L.batch_scores)
cli._load = lambda args: tiny_lm("GPT-2")
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_stopped_session_keeps_its_seconds_and_a_killed_one_is_counted_apart(tmp_path):
    """kn run stopped by SIGTERM exits as on Ctrl-C (130, 'interrupted'), its session's seconds kept and
    marked interrupted; a session killed with SIGKILL keeps none. The resumed run's recording sums the
    timed sessions and says how many stopped untimed (no number guessed for them)."""
    import os
    import signal
    import subprocess
    import sys

    from kn.runs.sessions import of as sessions_of
    from kn.testing import kill_when

    out = tmp_path / "run"
    argv = ["run", "--data", "builtin", "--relations", "P36,official_language", "--facts-per-relation", "3",
            "--steps", "2", "--phases", "locate", "--out", str(out)]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def child():
        return subprocess.Popen([sys.executable, "-c", TERM_CHILD, *argv], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def journaled(n):
        return lambda: (out / "journal.jsonl").exists() and len((out / "journal.jsonl").read_bytes().splitlines()) >= n

    p = child()
    deadline = time.time() + 120
    while not journaled(1)() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and b"interrupted" in err, err
    (first,) = sessions_of(json.loads((out / "config.json").read_text()))
    assert first["interrupted"] and first["seconds"] > 0 and first["finished"]
    kill_when(child(), journaled(2))
    killed = sessions_of(json.loads((out / "config.json").read_text()))[-1]
    assert killed["seconds"] is None and "interrupted" not in killed
    from kn import cli

    lm = tiny_lm("GPT-2")
    cli._load, load = (lambda args: lm), cli._load
    try:
        assert cli.main(argv) == 0 and cli.main(["record", str(out), str(tmp_path / "rec")]) == 0
    finally:
        cli._load = load
    prov = recording.read(tmp_path / "rec").provenance
    s = prov["sessions"]
    assert len(s) == 3 and prov["untimed_sessions"] == 1
    assert prov["seconds"] == pytest.approx(s[0]["seconds"] + s[2]["seconds"], abs=0.2)
    assert "1 session(s) stopped untimed" in recording.read(tmp_path / "rec").summary()["seconds"]
