"""Moved: dataset runs are the package `kn.runs`, fact selection is `kn.data.select`. This shim goes
as soon as `kn/__init__.py` imports `run` from `kn.runs` (then `kn.run` is only the function)."""
from .data.select import resolve_relations, select_facts  # noqa: F401
from .runs import CONFIG, FORMAT, JOURNAL, RunConfigError, RunResult, RunSettings, load_run, run  # noqa: F401
