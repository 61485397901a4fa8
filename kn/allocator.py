"""Keep freed memory in the heap for reuse: faster repeated attributions (glibc; elsewhere a no-op).

An attribution allocates the same large intermediates (a pass's activations and gradients, MBs
each) pass after pass and call after call. glibc's malloc serves blocks above its mmap threshold
(128 KiB, adapting up to 32 MiB) with fresh mmaps, and gives the heap's free top back to the
system beyond its trim threshold, so each pass page-faults its intermediates in again, zero-filled
by the kernel. `keep_freed_memory` raises both thresholds for the process, once: freed blocks stay
in the heap and the next pass reuses them. The process then holds on to its peak heap (the peak
itself does not change); `release()` gives it back and restores glibc's default values.

This is process-wide, so kn never does it on its own: call `keep_freed_memory()` (or pass
`--keep-freed-memory` to `kn locate` / `kn run`); a run's Ray workers follow the process that started
them. KN_MALLOC=default in the environment makes the call a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_MAX = 2**31 - 1  # the largest value mallopt's int takes: no trimming
DEFAULT = 128 << 10  # glibc's default for both
ENV = "KN_MALLOC"

_lock = threading.Lock()
_kept = False


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # glibc only (musl and macOS have no mallopt)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def enabled() -> bool:
    """Whether kn tunes the allocator here (glibc, and KN_MALLOC is not "default")."""
    return _LIBC is not None and os.environ.get(ENV, "").strip().lower() != "default"


def kept() -> bool:
    """Whether the thresholds are raised now."""
    return _kept


def keep_freed_memory() -> None:
    """Raise glibc's mmap and trim thresholds for the rest of the process (idempotent; cheap)."""
    global _kept
    if _kept or not enabled():
        return
    with _lock:
        if not _kept:
            _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_MAX)
            _LIBC.mallopt(M_TRIM_THRESHOLD, TRIM_MAX)
            _kept = True


def release() -> None:
    """Restore glibc's default thresholds (its adaptive mmap threshold stays off) and give the heap's
    free memory back to the system. `keep_freed_memory()` raises them again."""
    global _kept
    with _lock:
        if _kept:
            _LIBC.mallopt(M_MMAP_THRESHOLD, DEFAULT)
            _LIBC.mallopt(M_TRIM_THRESHOLD, DEFAULT)
            _LIBC.malloc_trim(0)
            _kept = False
