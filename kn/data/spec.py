"""Which data a run or chapter reads, as one string: ``"builtin"`` (the fact set shipped with kn,
the default everywhere), ``"agreement"`` (a syntactic control set shipped with kn,
`kn.data.agreement`), ``"pararel:PATH_OR_URL"`` or ``"bmlama:PATH_OR_URL"``."""
from __future__ import annotations

from .agreement import agreement
from .bmlama import load_bmlama
from .builtin_set import builtin
from .pararel import load_pararel
from .schema import FactSet

KINDS = ("builtin", "agreement", "pararel:PATH", "bmlama:PATH")


def load(spec: str = "builtin", *, relations=None, languages=None) -> FactSet:
    """The FactSet named by `spec`. `relations` narrows PARAREL's loading (the others are filtered
    later by `select_facts`); `languages` is BMLAMA's (default: every language found).

    Raises ValueError for a spec of another form, OSError (`DataUnavailableError`) for a missing
    directory or an unreachable URL."""
    if not isinstance(spec, str):
        raise TypeError(f"data must be a string ({' or '.join(KINDS)}), got {type(spec).__name__}")
    kind, _, source = spec.partition(":")
    if kind == "builtin" and not source:
        return builtin()
    if kind == "agreement" and not source:
        return agreement()
    if kind == "pararel" and source:
        return load_pararel(source, relations=relations)
    if kind == "bmlama" and source:
        return load_bmlama(source, languages=[languages] if isinstance(languages, str) else languages)
    raise ValueError(f"data must be {', '.join(KINDS[:-1])} or {KINDS[-1]} (a directory or a URL), got {spec!r}")
