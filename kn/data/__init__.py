"""Fact data: one schema (`Fact`, `FactSet`), the built-in multilingual fact set, and loaders for
PARAREL and BMLAMA (from a directory or a URL). Knows nothing of models: `kn.data.prepare` is the
one module that meets a tokenizer, and it is duck-typed."""
from .fetch import DataUnavailableError, cache_dir
from .schema import Fact, FactSet
from .builtin_set import builtin
from .pararel import load_pararel
from .bmlama import load_bmlama
from .spec import load

__all__ = ["DataUnavailableError", "Fact", "FactSet", "builtin", "cache_dir", "load", "load_bmlama", "load_pararel"]
