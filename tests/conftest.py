"""Fixtures shared by tests/unit, tests/integration and tests/book."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def _own_selection_cache(tmp_path, monkeypatch):
    """Each test its own cache of shared fact selections (`kn.data.shared_selection`): a selection kept
    by an earlier test, or by a user's runs, must not stand in for the probing a test checks."""
    monkeypatch.setenv("KN_SELECTION_CACHE", str(tmp_path / "shared-selections"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root directory."""
    return ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the repository (PARAREL, BMLAMA-17); skips, saying why, if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (it sits beside the repository as ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def packaged_lm():
    """Load a packaged model by name once per session: `packaged_lm("gemma-3-270m")`.

    Outside CI, a missing model package skips the test with the install command; in CI (CI=true)
    it fails, since `make test` installs both packaged models.
    """
    import kn

    loaded: dict[str, object] = {}

    def get(name: str = "gemma-3-270m"):
        if name not in loaded:
            try:
                loaded[name] = kn.load(name)
            except kn.ModelNotFoundError as err:
                if _in_ci():
                    raise
                pytest.skip(str(err))
        return loaded[name]

    return get


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module: tiny models on a busy 2-core machine run 30-50x faster."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def missing(what: str) -> None:
    """A missing tool: skip, saying how to install it (fails under CI=true, where .ci/run installs it)."""
    if _in_ci():
        pytest.fail(what)
    pytest.skip(what)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium (or KN_CHROMIUM) for Playwright, which is imported here; never a downloaded browser."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("playwright") is None:
        missing("Playwright for Python not installed (`pip install playwright`, in the project's test extra; "
                "never `playwright install`: the tests use Debian's chromium)")
    path = os.environ.get("KN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        missing("Chromium not found (Debian: `apt-get install -y chromium`; or set KN_CHROMIUM=/path/to/chromium)")
    return path
