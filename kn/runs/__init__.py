"""Dataset runs: knowledge neurons located and verified over relations x facts, kill-safe, with tidy
results (Dai et al. 2022, sections 3-4; algorithms.md section 1).

A run lives in one directory:

- ``config.json``: what was run (`RunSettings`: the common settings and each phase's, ``lm.describe()``,
  the data's name and fingerprint, ``kn.__version__``; `kn.runs.config`) and its sessions (command,
  commit, seconds; `kn.runs.sessions`). A run resumes into a directory of the same model, data and
  common settings; other phases or phase settings recompute what they invalidate.
- ``journal.jsonl``: the source of truth (`kn.runs.journal`). Append-only, one JSON record per line,
  each flushed and fsynced before the run moves on. A restart reads it, cuts off a torn last line (a
  kill during a write) and skips the work it holds, so no fact is lost or done twice.
- ``facts.parquet``, ``relations.parquet``, ``prompts.parquet`` and the phases' own tables
  (``neurons.parquet``): tidy tables, rebuilt from the journal after each relation and at the end
  (`load_run` rebuilds them anywhere; `kn.runs.tables`).

A run in several languages (`kn.run(..., languages=[...])`) is one such directory whose unit of work
is a (fact, language); `kn.runs.multilingual` reads the directory-per-language runs of older kn.

The work is done by phases (`kn.runs.phases`: "locate", "verify", "degenerate", "statements",
"crosslingual", "crossedit"), each with its own settings, journal records and table columns. The per-fact work runs here or on a Ray cluster (`kn.runs.cluster`,
``engine="ray"``), with the same journal and tables. Controls are picked by a seeded RNG keyed on the fact id, so a resumed run
equals an uninterrupted one.
"""
from .cluster import Ray
from .config import FORMAT
from .directory import CONFIG, JOURNAL, RunConfigError
from .api import load_run, run
from .journal import Journal
from .keyed import Keyed
from .multilingual import MultiRunResult
from .phases import PHASES, Phase
from .result import RunResult
from .settings import RunSettings

__all__ = ["CONFIG", "FORMAT", "JOURNAL", "PHASES", "Journal", "Keyed", "MultiRunResult", "Phase", "Ray", "RunConfigError", "RunResult",
           "RunSettings", "load_run", "run"]
