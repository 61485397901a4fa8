"""kn.recording: a finished run recorded as CSV tables with provenance reads back equal; unfinished
runs and empty recordings are refused."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from kn import recording
from kn.data.schema import Fact, FactSet
from kn.run import CONFIG, JOURNAL, load_run, run
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
