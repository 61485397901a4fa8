"""Fixtures shared by tests/unit, tests/integration and tests/book."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


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
