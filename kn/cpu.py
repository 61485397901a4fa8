"""What this CPU does natively: bfloat16 products (without avx512_bf16 or amx_bf16 they are emulated,
many times slower than float32)."""
from __future__ import annotations

from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags, or None where they cannot be read (not Linux on x86)."""
    try:
        line = next(l for l in cpuinfo.read_text().splitlines() if l.startswith("flags"))
    except (OSError, StopIteration):
        return None
    return set(line.partition(":")[2].split())


def bf16_native(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether the CPU has bf16 product instructions; None when its flags are unknown."""
    found = flags(cpuinfo)
    return None if found is None else any(f in found for f in BF16_FLAGS)


def describe() -> str:
    """One line: torch's CPU capability and the bf16 instructions found."""
    import torch

    found = flags()
    native = sorted(f for f in BF16_FLAGS if f in (found or ()))
    what = "unknown (no /proc/cpuinfo flags)" if found is None else \
        ", ".join(native) if native else "none (bf16 products are emulated)"
    return f"CPU: torch capability {torch.backends.cpu.get_cpu_capability()}; bf16 instructions: {what}."
