"""kn.allocator: the glibc tuning is opt-in. An attribution alone leaves malloc as it is; after
keep_freed_memory() (or `--keep-freed-memory`) freed large blocks stay in the process; KN_MALLOC=default
makes the call a no-op and release() gives them back. Each case runs in a fresh interpreter: the
setting is per process."""
import json
import os
import subprocess
import sys

import pytest
import torch

import kn
from kn import allocator, cli
from kn.testing import tiny_lm

glibc = pytest.mark.skipif(not allocator.enabled(), reason="glibc's mallopt is not available here")

SCRIPT = r"""
import json, sys, torch
import kn
from kn import allocator
from kn.testing import tiny_lm

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def freed(n=24 << 20, k=3):
    # what freeing k large intermediates leaves resident (their bytes touched, then all freed): with
    # glibc's defaults, even once its mmap threshold has adapted to them, the heap's free top beyond
    # twice that threshold goes back to the system
    before = rss()
    ts = [torch.ones(n // 4) for _ in range(k)]
    del ts
    return rss() - before

out = {"enabled": allocator.enabled()}
lm = tiny_lm("GPT-2")
kn.attribute(lm, "Paris is the capital of", "France", steps=2)
out["kept_by_attribution"] = allocator.kept()
out["after_attribution"] = freed()
allocator.keep_freed_memory()
out["kept"] = allocator.kept()
out["after"] = freed()
if sys.argv[1] == "release":
    held = rss()
    allocator.release()
    out["kept_after_release"] = allocator.kept()
    out["given_back"] = held - rss()
print(json.dumps(out))
"""


def run(mode: str, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc
def test_attribution_alone_leaves_the_allocator_alone_and_the_call_keeps_freed_memory():
    out = run("keep")
    assert not out["kept_by_attribution"]
    assert out["after_attribution"] < 4 << 20, out  # glibc's default: a 24 MB block is an mmap, unmapped on free
    assert out["kept"]
    assert out["after"] > 60 << 20, out  # after the call, all of it stays in the heap for the next pass


@glibc
def test_release_gives_it_back():
    out = run("release")
    assert not out["kept_after_release"]
    # what the heap held free goes back at once, wherever in the heap it lies. (What later frees leave
    # resident is glibc's adaptive business: fragmentation can keep blocks in holes of the heap.)
    assert out["given_back"] > 60 << 20, out


@glibc
def test_env_makes_the_call_a_no_op():
    out = run("keep", {"KN_MALLOC": "default"})
    assert not out["enabled"] and not out["kept"]  # kn set no malloc threshold (what glibc then keeps is its own)


@pytest.fixture(scope="module")
def gpt2(one_thread):
    return tiny_lm("GPT-2")


@pytest.mark.parametrize("flag", [False, True])
def test_cli_flag_asks_for_it(gpt2, monkeypatch, capsys, flag):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(True))
    monkeypatch.setattr(cli, "_load", lambda args: gpt2)
    argv = ["locate", "Paris is the capital of", "Paris is located in", "-a", "France", "--steps", "2",
            "--min-prompts", "1"] + (["--keep-freed-memory"] if flag else [])
    assert cli.main(argv) == 0 and "knowledge neurons of 'France'" in capsys.readouterr().out
    assert calls == ([True] if flag else [])


@pytest.mark.parametrize("keep", [False, True])
def test_a_ray_worker_follows_its_driver(gpt2, tmp_path, monkeypatch, keep):
    from kn.runs import RunSettings
    from kn.runs.cluster import _Worker

    gpt2.model.save_pretrained(tmp_path)
    gpt2.tokenizer.save_pretrained(tmp_path)
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(True))
    _Worker(kn.load(str(tmp_path), device="cpu").source, "cpu", torch.get_num_threads(), RunSettings(), [], keep)
    assert calls == ([True] if keep else [])
