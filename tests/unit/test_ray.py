"""The Ray engine on a local Ray (127.0.0.1 only): the same tables as the local engine, a worker killed
mid-run loses and duplicates nothing, a driver killed with -9 resumes, and clear errors."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray engine needs ray (pip install 'kn[ray]')")

import kn  # noqa: E402
from kn import checks  # noqa: E402
from kn.runs import JOURNAL, Ray, load_run, run  # noqa: E402
from kn.runs.cluster import WorkerStartError  # noqa: E402
from kn.testing import tiny_lm  # noqa: E402

from test_run import tiny_facts  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
KW = dict(steps=3, phases=("locate", "verify", "degenerate"), dkn_candidates=4, progress=False)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny GPT-2 on disk: workers load models by name or path."""
    lm = tiny_lm("GPT-2", initializer_range=0.2)
    path = tmp_path_factory.mktemp("tiny-gpt2")
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lm(saved):
    return kn.load(saved, device="cpu")


@pytest.fixture(scope="module")
def local(lm, tmp_path_factory):
    return run(lm, tiny_facts(), tmp_path_factory.mktemp("local"), **KW)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray for the module (started and stopped here, 127.0.0.1 only)."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def assert_same(a, b):
    import pandas as pd

    for name in ("facts", "neurons", "relations", "prompts", "degenerate_pairs"):
        x, y = getattr(a, name), getattr(b, name)
        drop = [c for c in x.columns if c.endswith("seconds")]
        pd.testing.assert_frame_equal(x.drop(columns=drop), y.drop(columns=drop), check_exact=False, rtol=1e-6,
                                      atol=1e-9, obj=name)


def fact_records(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / JOURNAL).read_text().splitlines()) if r.get("fact_id")]


# first: it starts and stops a cluster of its own (`ray stop` stops every local Ray), before the module's
DRIVER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads(1)
    import kn
    from kn.runs import journal, run
    from test_run import tiny_facts

    append, written = journal.Journal.append, []

    def append_then_die(self, record):  # SIGKILL once `kill_after` fact records are on disk
        append(self, record)
        if record.get("fact_id"):
            written.append(record)
            if len(written) == {kill_after}:
                os.kill(os.getpid(), signal.SIGKILL)

    journal.Journal.append = append_then_die
    run(kn.load({model!r}, device="cpu"), tiny_facts(), {out!r}, engine="ray", workers=1, address={address!r},
        steps=3, phases=("locate", "verify", "degenerate"), dkn_candidates=4, progress=False)
""")


def test_a_driver_killed_with_9_resumes(saved, local, tmp_path):
    import socket

    with socket.socket() as sock:  # a port free right now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "disabled"}  # a 127.0.0.1-only test cluster: no token
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address",
                    "127.0.0.1", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"], check=True,
                   capture_output=True, env=env)
    address = f"127.0.0.1:{port}"
    out = tmp_path / "driver"

    def driver(kill_after):
        script = DRIVER.format(tests=str(Path(__file__).parent), model=str(saved), out=str(out), address=address,
                               kill_after=kill_after)
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)

    try:
        first = driver(3)
        assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
        assert len(fact_records(out)) == 3
        second = driver(0)
        assert second.returncode == 0, second.stderr[-3000:]
    finally:
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True, env=env)
    assert_same(load_run(out), local)
    keys = [(r["type"], r["fact_id"]) for r in fact_records(out)]
    assert len(keys) == len(set(keys))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_children() -> list:
    """This process's child processes that are Ray's (raylet, gcs_server, workers), after a moment to exit."""
    import psutil

    def of():
        out = []
        for p in psutil.Process().children(recursive=True):
            try:
                if "ray" in " ".join(p.cmdline()).lower():
                    out.append(p)
            except psutil.Error:
                pass
        return out

    deadline = time.monotonic() + 20
    while (left := of()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


# these four run before the module's `cluster` fixture starts one: each run starts (and must stop) its own
def test_no_cluster_at_the_address_fails_fast(lm, tmp_path):
    t0 = time.monotonic()
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(checks.ArgumentError, match=f"no Ray cluster answers at address='{address}'"):
        run(lm, tiny_facts(), tmp_path / "x", engine=Ray(address=address, connect_timeout=2), **KW)
    assert time.monotonic() - t0 < 30 and not ray.is_initialized()
    with pytest.raises(checks.ArgumentError, match="connect_timeout"):
        Ray(connect_timeout=float("nan"))


def test_more_workers_than_cpus_are_refused_before_any_starts(lm, tmp_path):
    n = os.cpu_count()
    with pytest.raises(checks.ArgumentError, match=f"workers={n + 1} x num_cpus=1 need {n + 1} CPUs and this machine "
                                                   f"has {n}; .* pass workers <= {n}"):
        run(lm, tiny_facts(), tmp_path / "x", engine=Ray(workers=n + 1), **KW)
    with pytest.raises(checks.ArgumentError, match=f"workers=2 x num_cpus={n:g} need {2 * n} CPUs"):
        run(lm, tiny_facts(), tmp_path / "x", engine=Ray(workers=2, num_cpus=n), **KW)
    with pytest.raises(checks.ArgumentError, match=f"workers={n + 1} x num_cpus=1 need"):
        run(lm, tiny_facts(), tmp_path / "x", engine="ray", workers=n + 1, **KW)
    assert not ray.is_initialized() and not ray_children() and not (tmp_path / "x").exists()  # nothing written


def test_a_worker_start_up_error_reaches_the_user_and_nothing_is_left_running(saved, tmp_path):
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(saved, broken)
    lm = kn.load(broken, device="cpu")
    (broken / "config.json").unlink()  # the driver has it loaded; a worker cannot load it
    t0 = time.monotonic()
    with pytest.raises(WorkerStartError, match="a Ray worker could not start") as err:
        run(lm, tiny_facts(), tmp_path / "x", engine=Ray(workers=1), **KW)
    first = str(err.value).splitlines()[0]  # what `kn run` prints: the worker's own message on the first line
    assert str(broken) in first and "config.json" in first
    assert time.monotonic() - t0 < 120
    assert not ray.is_initialized() and not ray_children()


def test_ctrl_c_stops_every_ray_process_the_run_started(lm, tmp_path, monkeypatch):
    from kn.runs import journal

    append = journal.Journal.append

    def interrupted(self, record):
        append(self, record)
        if record.get("fact_id"):
            raise KeyboardInterrupt

    monkeypatch.setattr(journal.Journal, "append", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(lm, tiny_facts(), tmp_path / "x", engine=Ray(workers=1), **KW)
    assert not ray.is_initialized() and not ray_children()


def test_same_tables_as_the_local_engine(lm, local, cluster, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="kn.runs.cluster"):
        res = run(lm, tiny_facts(), tmp_path / "ray", engine="ray", workers=2, **KW)
    assert_same(res, local)
    assert "s/fact" in caplog.text and caplog.text.count("worker ") >= 2  # per-worker throughput, two workers
    assert_same(load_run(tmp_path / "ray"), local)
    recs = fact_records(tmp_path / "ray")
    keys = [(r["type"], r["fact_id"]) for r in recs]
    assert len(keys) == len(set(keys))  # nothing twice; the error fact (Lisbon: unknown word) recorded once
    assert sum(1 for r in recs if "error" in r) == 1


def many_facts(copies=4):
    """tiny_facts() several times over (ids apart): a run long enough to kill a worker in."""
    from kn.data.schema import Fact, FactSet

    return FactSet([Fact(f"{f.fact_id}#{k}", f.relation, f.subject, f.object, f.templates)
                    for k in range(copies) for f in tiny_facts()], "tiny x4")


def test_a_killed_worker_loses_and_duplicates_nothing(lm, cluster, tmp_path, caplog):
    import logging

    local_many = run(lm, many_facts(), tmp_path / "local", **KW)
    out = tmp_path / "killed"
    killed = []

    def kill_one():  # once the run has journaled two facts: SIGKILL one worker's process
        while not (out / JOURNAL).exists() or len(fact_records(out)) < 2:
            time.sleep(0.02)
        pids = subprocess.run(["pgrep", "-f", "ray::_Worker"], capture_output=True, text=True).stdout.split()
        if pids:
            os.kill(int(pids[0]), signal.SIGKILL)
            killed.append(len(fact_records(out)))

    t = threading.Thread(target=kill_one, daemon=True)
    t.start()
    with caplog.at_level(logging.WARNING, logger="kn.runs.cluster"):
        res = run(lm, many_facts(), out, engine=Ray(workers=2, retries=5), **KW)
    t.join(timeout=30)
    assert killed and killed[0] < len(fact_records(out)), "the worker was not killed mid-run"
    assert "handing it to a fresh worker" in caplog.text
    assert_same(res, local_many)
    keys = [(r["type"], r["fact_id"]) for r in fact_records(out)]
    assert len(keys) == len(set(keys))


def test_a_model_built_in_memory_is_refused(tmp_path):
    with pytest.raises(checks.ArgumentError, match="save_pretrained"):
        run(tiny_lm("GPT-2"), tiny_facts(), tmp_path / "x", engine="ray", **KW)
    with pytest.raises(checks.ArgumentError, match="engine must be"):
        run(tiny_lm("GPT-2"), tiny_facts(), tmp_path / "y", engine="spark", **KW)
    with pytest.raises(checks.ArgumentError, match="workers"):
        run(tiny_lm("GPT-2"), tiny_facts(), tmp_path / "z", workers=2, **KW)
    with pytest.raises(checks.ArgumentError, match="workers"):
        Ray(workers=0)


def test_cli_engine_ray(lm, local, cluster, tmp_path, monkeypatch, capsys):
    from kn import cli

    monkeypatch.setattr(cli, "_load", lambda args: lm)
    monkeypatch.setattr(cli, "_facts", lambda args, languages: tiny_facts())
    out = tmp_path / "cli"
    assert cli.main(["run", "--engine", "ray", "--workers", "2", "--steps", "3", "--phases", "locate,verify,degenerate",
                     "--dkn-candidates", "4", "--out", str(out)]) == 0
    assert_same(load_run(out), local)
    assert cli.main(["run", "--workers", "2", "--out", str(tmp_path / "b")]) == 2
    assert "--engine ray" in capsys.readouterr().err


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA GPU on this machine")
def test_cuda_workers(lm, local, cluster, tmp_path):
    res = run(lm, tiny_facts(), tmp_path / "cuda", engine=Ray(workers=1, num_gpus=1, device="cuda"), **KW)
    assert_same(res, local)
