"""Where kn keeps what it makes once: fp32 copies of packaged models, downloaded dataset files."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str = "") -> Path:
    """``$KN_CACHE``, else ``$XDG_CACHE_HOME/kn``, else ``~/.cache/kn``; `kind` names a subfolder
    ("data": dataset files, which ``$KN_DATA_CACHE`` may put elsewhere)."""
    if kind == "data" and os.environ.get("KN_DATA_CACHE"):
        return Path(os.environ["KN_DATA_CACHE"])
    base = os.environ.get("KN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kn"
    return Path(base) / kind if kind else Path(base)
