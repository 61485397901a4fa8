"""Fact data: one schema (`Fact`, `FactSet`), the built-in multilingual fact set, loaders for
PARAREL and BMLAMA (from a directory or a URL), and the choice of a run's facts (`select_facts`).
Knows nothing of models: `kn.data.prepare` is the one module that meets a tokenizer, and it is
duck-typed; `select_facts` probes a model only when asked for known facts (imported then)."""
from .fetch import DataUnavailableError, cache_dir
from .schema import Fact, FactSet
from .builtin_set import builtin
from .pararel import load_pararel
from .bmlama import load_bmlama
from .spec import load
from .select import explain, language_counts, resolve_relations, select_facts, select_in_languages

__all__ = ["DataUnavailableError", "Fact", "FactSet", "builtin", "cache_dir", "explain", "language_counts", "load",
           "load_bmlama", "load_pararel", "resolve_relations", "select_facts", "select_in_languages"]
