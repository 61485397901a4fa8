"""`kn.run` and `kn.load_run`: a run's arguments checked once, then one run (`kn.runs.engine`) or one
per language (`kn.runs.multilingual`)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .. import checks
from . import cluster, multilingual
from .engine import run_one
from .keyed import Keyed
from .result import RunResult, load_one
from .settings import RunSettings

log = logging.getLogger(__name__)


def run(lm, facts, out_dir: str | os.PathLike, settings: RunSettings | None = None, *, languages=None,
        progress: bool = True, resume: bool = True, engine="local", workers: int | None = None,
        address: str | None = None, command: str | None = None, **changes) -> RunResult:
    """Locate and verify the knowledge neurons of every fact in `facts` (a FactSet or Facts), kill-safe.

    settings: a `kn.RunSettings` (default: the paper's); `changes` override its fields
    (`kn.run(lm, facts, out, steps=4, share=0.5)`). Facts without a `settings.language` version are
    left out. The run's phases (`settings.phases`) work relation by relation: "locate" finds each
    fact's coarse sets, then tunes the relation's share and fixes each fact's knowledge neurons;
    "verify" suppresses / amplifies them on the fact and, with `controls`, on a random fact of
    another relation and of the same relation. Results go to `out_dir` (kn.runs): an interrupted run
    restarted with the same arguments resumes; `resume=False` replaces a run there (or fills an empty
    directory; anything else is refused). `out_dir=kn.runs.Keyed(parent, name)` names the directory by
    the run's config (parent/name-<key>): other arguments, another directory. A fact that raises is
    recorded with its error.

    languages: several language codes (or "en,zh"): the facts with a version in every one, each
    (fact, language) a unit of the run (one directory, one journal); `res.runs[language]` is one
    language's view, `res.likn()` / `res.overlap()` the language-independent neurons.

    engine: "local" (this process) or "ray" (`workers` Ray actors, on the cluster at `address`, default
    a local one; or a `kn.runs.Ray(...)` for every option): the same journal and tables
    (`kn.runs.cluster`). The model is loaded in each worker by the name or path `kn.load` was given.

    command: what started the run, kept with each session in config.json (`kn.runs.sessions`; the CLI
    passes its command line), so `kn record` can say how the numbers were made.
    """
    if languages is not None:
        if "language" in changes:
            raise checks.ArgumentError("pass language= (one language) or languages= (several), not both")
        changes["languages"] = languages
    settings = RunSettings.make(settings, **changes)
    if not isinstance(out_dir, Keyed) and (not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir).strip()):
        raise checks.ArgumentError(f"out_dir must be a directory path or a kn.runs.Keyed, got {out_dir!r}")
    facts = facts if hasattr(facts, "__len__") else list(facts)
    if not len(facts):
        selection = (getattr(facts, "info", None) or {}).get("selection")
        if selection:  # select_facts chose nothing: say per language why
            from ..data import explain
            raise checks.ArgumentError(f"facts is empty: {explain(selection)}")
        raise checks.ArgumentError("facts is empty: pass a FactSet (kn.data.load, select_facts) or a list of Facts")
    ray = cluster.resolve(engine, workers, address)
    if ray is not None:
        cluster.source_of(lm)  # before any work: a model built in memory cannot reach the workers
    return run_one(lm, facts, out_dir, settings, progress=progress, resume=resume, engine=ray, command=command)


def load_run(out_dir: str | os.PathLike):
    """The tables of the run in `out_dir`, rebuilt from its journal (no model needed; read-only).
    Reads run directories of every format (format 1: kn before kn.runs); a multilingual run's
    directory gives its `MultiRunResult`."""
    out = Path(out_dir)
    return multilingual.load(out) if multilingual.is_multilingual(out) else load_one(out)
