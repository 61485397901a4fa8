"""kn.allocator: after an attribution, freed large blocks stay in the process (glibc); KN_MALLOC=default
and release() give them back. Each case runs in a fresh interpreter: the setting is per process."""
import json
import os
import subprocess
import sys

import pytest

from kn import allocator

pytestmark = pytest.mark.skipif(not allocator.enabled(), reason="glibc's mallopt is not available here")

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

out = {"before": freed()}
lm = tiny_lm("GPT-2")
kn.attribute(lm, "Paris is the capital of", "France", steps=2)
out["kept"] = allocator.kept()
out["enabled"] = allocator.enabled()
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


def test_attribution_keeps_freed_memory_in_the_heap():
    out = run("keep")
    assert out["before"] < 4 << 20, out  # glibc's default: a 24 MB block is an mmap, unmapped on free
    assert out["kept"]
    assert out["after"] > 60 << 20, out  # now all of it stays in the heap for the next pass


def test_release_gives_it_back():
    out = run("release")
    assert not out["kept_after_release"]
    # what the heap held free goes back at once, wherever in the heap it lies. (What later frees leave
    # resident is glibc's adaptive business: fragmentation can keep blocks in holes of the heap.)
    assert out["given_back"] > 60 << 20, out


def test_env_opts_out():
    out = run("keep", {"KN_MALLOC": "default"})
    assert not out["kept"]
    assert not out["enabled"]
