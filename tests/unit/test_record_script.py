"""book/results/record.sh is a list of `kn run` and `kn record` commands: each run command parses with
kn's own CLI into valid run settings (nothing is run: a recorder stands in for kn), and each recording
is of a run made just before it, written where the chapters read."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kn import cli

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "book" / "results" / "record.sh"


def _commands(tmp_path: Path, *args: str) -> list[list[str]]:
    log = tmp_path / "commands.jsonl"
    fake = tmp_path / "kn"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nwith open({str(log)!r}, 'a') as f:\n"
                    "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake.chmod(0o755)
    subprocess.run(["bash", str(SCRIPT), *args], check=True, env={**os.environ, "KN": str(fake)}, timeout=60)
    return [json.loads(line) for line in log.read_text().splitlines()]


def _validated_runs(commands, monkeypatch) -> dict[str, object]:
    """{--out: RunSettings} of the run commands, each parsed by kn's CLI (cmd_run replaced by a check)."""
    runs = {}

    def check(args):
        runs[args.out] = cli.run_settings(args)

    monkeypatch.setattr(cli, "cmd_run", check)
    for c in commands:
        if c[0] == "run":
            assert cli.main(c) == 0, c
    return runs


@pytest.mark.parametrize("mode", ["pararel", "dkn", "ml", "amig-en", "critique", "edits", "xedits", "agreement", "verbfinal", "map"])
def test_every_recording_is_of_a_run_made_before_it(mode, tmp_path, monkeypatch):
    args = [mode, "/data/pararel"] if mode in ("pararel", "edits", "xedits", "agreement", "verbfinal", "map") else [mode]
    commands = _commands(tmp_path, *args, *(["a"] if mode == "edits" else []))
    assert {c[0] for c in commands} == {"run", "record"}
    runs = _validated_runs(commands, monkeypatch)
    made = set()
    for c in commands:
        if c[0] == "run":
            made.add(c[c.index("--out") + 1])
        else:
            run_dir, dest = c[1], c[2]
            assert run_dir in made, f"{dest} records {run_dir} before it is run"
            assert dest.startswith("book/results/") and ".." not in dest
    phases = {out: s.phases for out, s in runs.items()}
    if mode == "pararel":
        assert phases["runs/pararel/gemma-3-270m-ig"] == ("locate", "verify", "update", "erase", "query", "specificity")
        assert runs["runs/pararel/smollm2-135m-activation"].attribution.kind == "activation"
    if mode == "dkn":
        assert set(phases.values()) == {("locate", "degenerate", "degeneracy", "statements")}
        assert runs["runs/dkn/gemma-3-270m-zh"].languages == ("zh",)
        g = runs["runs/dkn/gemma-3-270m-en"].attribution
        assert (g.rule, g.steps, g.baseline) == ("gauss_legendre", 6, "amig")
    if mode == "edits":  # part a here; every part below
        e = runs["runs/edits/gemma-3-270m-a"]
        assert e.phases == ("locate", "edit") and e.of("edit").edit_batches == () and e.of("edit").edit_facts == 20
        assert e.of("edit").edit_singles and e.attribution.rule == "gauss_legendre"
        assert commands[0][commands[0].index("--known-top") + 1] == "1"
        assert "rome.covariance=generated" in e.of("edit").edit_options
        assert {"P36", "P1376", "P47", "P530"} <= set(commands[0][commands[0].index("--relations") + 1].split(","))
    if mode == "xedits":
        x = runs["runs/edits/gemma-3-270m-en-zh"]
        assert x.languages == ("en", "zh") and x.phases == ("locate", "edit") and x.of("edit").edit_facts == 10
        assert x.of("edit").edit_neuron_sets == ("own", "likn", "specific")
        assert "rome.covariance=generated" in x.of("edit").edit_options  # as the single edits of `edits`
    if mode == "agreement":
        paper, gx = runs["runs/agreement/gemma-3-270m-paper"].attribution, runs["runs/agreement/gemma-3-270m-gradxact"]
        assert (paper.kind, paper.rule, paper.steps, paper.baseline) == ("ig", "riemann_left", 20, "zero")
        assert gx.attribution.kind == "gradxact" and runs["runs/agreement/gemma-3-270m-gl6"].attribution.steps == 6
        two_stage = runs["runs/agreement/smollm2-135m-gl6-screen3"].attribution
        assert (two_stage.rule, two_stage.steps, two_stage.screen) == ("gauss_legendre", 6, 3)
        per = {o: c[c.index("--facts-per-relation") + 1] for c in commands if c[0] == "run" for o in [c[c.index("--out") + 1]]}
        assert 9 * int(per["runs/agreement/gemma-3-270m-paper"]) >= 200 and 9 * int(per["runs/agreement/smollm2-135m-paper"]) >= 100
        bf16 = next(c for c in commands if c[0] == "run" and c[c.index("--out") + 1] == "runs/agreement/gemma-3-270m-gl6-screen3-bf16")
        assert bf16[bf16.index("--dtype") + 1] == "bfloat16" and runs["runs/agreement/gemma-3-270m-gl6-screen3-bf16"].attribution.screen == 3
        assert runs["runs/agreement/gemma-3-270m-gl3-screen3"].attribution.steps == 3
        gl2, gl3_bf16 = runs["runs/agreement/smollm2-135m-gl2"], runs["runs/agreement/smollm2-135m-gl3-bf16"]
        assert (gl2.attribution.steps, gl2.attribution.screen, gl3_bf16.attribution.steps) == (2, None, 3)
        assert runs["runs/agreement/gemma-3-270m-gl1"].attribution.steps == 1
        assert [o for o in per if o.startswith("runs/agreement/gemma")][0].endswith("-paper")  # the reference first
    if mode == "verbfinal":
        v = runs["runs/ml/gemma-3-270m-en-ja-amig"]
        assert v.languages == ("en", "ja") and "crosslingual" in v.phases and v.attribution.baseline == "amig"
        assert "--sentence" in commands[0]
    if mode == "map":
        from kn.fast_settings import FAST

        whole, fast = runs["runs/map/gemma-3-270m-fast"], FAST["gemma-3-270m"]
        assert "--relations" not in commands[0] and whole.phases == ("locate", "verify")  # every relation
        assert (whole.attribution.rule, whole.attribution.steps, whole.attribution.screen) == (fast.rule, fast.steps, fast.screen)
    if mode == "critique":
        assert runs["runs/critique/gemma-3-270m-agreement"].languages == ("en", "fr")
    if mode == "ml":
        assert runs["runs/ml/gemma-3-270m-amig"].languages == ("en", "zh", "fr", "ru")
        assert "crossedit" in phases["runs/ml/gemma-3-270m-amig"] and "crossedit" not in phases["runs/ml/gemma-3-270m-ig-zero"]
        assert runs["runs/ml/smollm2-135m-ig-zero"].attribution.rule == "riemann_left"
        dests = {c[2] for c in commands if c[0] == "record"}
        assert {"book/results/likn/gemma-3-270m", "book/results/amig/gemma-3-270m/activation"} <= dests


def test_a_mode_it_does_not_know_is_refused(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "nope"], capture_output=True, text=True, env={**os.environ, "KN": "false"})
    assert r.returncode == 2 and "usage" in r.stderr


def test_the_edit_study_parts_are_the_same_edits_singly_and_in_batches(tmp_path, monkeypatch):
    """record.sh edits a, b and batches: the halves' relations are disjoint and together the batches run's; each
    part the same selection, attribution and edit settings but for the batches and edit_singles."""
    runs, relations = {}, {}
    for part in ("a", "b", "batches", "bad"):
        (tmp_path / part).mkdir()
    for part in ("a", "b", "batches"):
        commands = _commands(tmp_path / part, "edits", "/data/pararel", part)
        runs |= _validated_runs(commands, monkeypatch)
        relations[part] = set(commands[0][commands[0].index("--relations") + 1].split(","))
        assert commands[1] == ["record", f"runs/edits/gemma-3-270m-{part}", f"book/results/edits/gemma-3-270m/{part}"]
    assert not relations["a"] & relations["b"] and relations["a"] | relations["b"] == relations["batches"]
    a, b, batches = (runs[f"runs/edits/gemma-3-270m-{p}"] for p in ("a", "b", "batches"))
    assert a.attribution == b.attribution == batches.attribution and a.seed == b.seed == batches.seed
    assert batches.of("edit").edit_batches == (10, 100) and not batches.of("edit").edit_singles
    assert batches.of("edit").edit_batch_limit == (10, 1)
    import dataclasses
    assert dataclasses.replace(batches.of("edit"), edit_batches=(), edit_singles=True, edit_batch_limit=(0,)) == a.of("edit") == b.of("edit")
    with pytest.raises(subprocess.CalledProcessError):
        _commands(tmp_path / "bad", "edits", "/data/pararel", "c")


@pytest.mark.parametrize("mode", ["convergence", "calibration", "coverage"])
def test_the_studies_are_kn_commands_that_record_into_book_results(mode, tmp_path, monkeypatch):
    """record.sh's studies: each one kn command that parses with kn's CLI (its work replaced by a check)
    and records itself under book/results; the convergence study as recorded (36 facts, 2 prompts, an
    exact integral of 64 nodes, half the facts from PARAREL)."""
    commands = _commands(tmp_path, mode, *(["/data/dir"] if mode != "calibration" else []))
    assert commands and {c[0] for c in commands} == {mode.replace("calibration", "calibrate")}
    seen = []
    for name in ("cmd_convergence", "cmd_calibrate", "cmd_coverage"):
        monkeypatch.setattr(cli, name, seen.append)
    for c in commands:
        assert cli.main(c) == 0, c
    assert len(seen) == len(commands)
    for args in seen:
        assert args.record.startswith("book/results/") and ".." not in args.record
    if mode == "convergence":
        a = seen[0]
        assert (a.facts, a.prompts, a.steps, a.exact, a.pararel, a.out) == (36, 2, "2,4,8,16,32", 64, "/data/dir",
                                                                          "runs/convergence")
    if mode == "coverage":
        assert [a.sentence for a in seen] == [False, True] and {a.data for a in seen} == {"bmlama:/data/dir"}


def test_every_recording_in_the_book_was_made_by_a_kn_command():
    """Each provenance.json under book/results names the kn command that made it (a subcommand kn's CLI
    has), none a script or a chapter."""
    subcommands = {"run", "calibrate", "coverage", "convergence"}
    provenances = sorted((ROOT / "book" / "results").rglob("provenance.json"))
    assert len(provenances) > 40
    for p in provenances:
        words = json.loads(p.read_text())["command"].split()
        assert words[0] == "kn" and words[1] in subcommands, (p.relative_to(ROOT), " ".join(words[:3]))
