"""Where and how a number was made: this machine, the kn commit, package versions, the time (UTC).
A leaf module: runs record it at their start (`kn.runs.sessions`), recordings with their tables."""
from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from .version import __version__


def machine() -> dict:
    """This machine: CPU model, cores, memory, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "os": platform.platform()}


def commit(path: str | os.PathLike | None = None) -> str | None:
    """The git commit of the kn source at `path` (default: this package's checkout), with "+dirty"
    when kn/ has uncommitted changes; None outside a git checkout."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def versions() -> dict:
    """Versions of kn and of the packages its numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"kn": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def finite(obj, name: str):
    """`obj` (JSON-like: dicts, lists, numbers, text) if every number in it is finite, else a clear error
    naming where the first non-finite one is (provenance is never written with NaN or inf)."""
    import math

    from .checks import ArgumentError

    if isinstance(obj, float) and not math.isfinite(obj):
        raise ArgumentError(f"{name} is {obj}: provenance holds finite numbers only (pass None where there is none)")
    if isinstance(obj, dict):
        for k, v in obj.items():
            finite(v, f"{name}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            finite(v, f"{name}[{i}]")
    return obj


def now() -> str:
    """The current UTC time as provenance writes it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
