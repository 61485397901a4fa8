"""Where dataset files come from: a local directory, or a URL downloaded once into a user cache.

The cache is ``$KN_DATA_CACHE``, else the ``data`` folder of `kn.cache.cache_dir` (``~/.cache/kn/data``); a file
is fetched with `urllib` the first time and read from the cache afterwards. Without a network the
loaders raise `DataUnavailableError`, which says which URL failed and to pass a local path instead.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .. import cache as _cache

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0


class DataUnavailableError(OSError):
    """A dataset file could not be read or downloaded."""


class RemoteFileMissing(DataUnavailableError):
    """The server answered, but the file is not there (HTTP 404/410)."""


def is_url(source: str | os.PathLike) -> bool:
    return isinstance(source, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source) is not None


def cache_dir() -> Path:
    """The download cache for dataset files (`kn.cache.cache_dir`)."""
    return _cache.cache_dir("data")


def join(base: str, *parts: str) -> str:
    """`base` URL (or path) joined with relative parts."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def _cache_path(url: str, root: Path) -> Path:
    u = urllib.parse.urlsplit(url)
    parts = [p for p in (u.netloc + "/" + u.path).split("/") if p not in ("", ".", "..")]
    safe = [re.sub(r"[^A-Za-z0-9._@+-]", "_", p) for p in parts]
    return root.joinpath(*safe)


def fetch(url: str, *, cache: str | os.PathLike | None = None, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Local copy of `url`: from the cache, else downloaded into it (atomically)."""
    path = _cache_path(url, Path(cache) if cache is not None else cache_dir())
    if path.is_file():
        return path
    log.info("downloading %s -> %s", url, path)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = resp.read()
    except urllib.error.HTTPError as e:
        cls = RemoteFileMissing if e.code in (404, 410) else DataUnavailableError
        raise cls(f"could not fetch {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, FileNotFoundError):  # file:// URL to a missing file
            raise RemoteFileMissing(f"could not fetch {url}: no such file") from None
        raise DataUnavailableError(
            f"could not fetch {url} ({reason}). Are you offline? Download the dataset yourself and "
            "pass its local directory as `source` instead of a URL."
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_text(source: str | os.PathLike, *parts: str, cache: str | os.PathLike | None = None,
              timeout: float = DEFAULT_TIMEOUT) -> str:
    """Text of the file `parts` under `source` (a directory or a base URL), decoded as UTF-8."""
    if is_url(source):
        path = fetch(join(str(source), *parts), cache=cache, timeout=timeout)
    else:
        path = Path(source).joinpath(*parts)
        if not path.is_file():
            raise FileNotFoundError(f"no such dataset file: {path}")
    return path.read_bytes().decode("utf-8-sig")
