"""A run in several languages (Chen et al. 2024): one kn run per language, over the same facts.

    out/languages.json   what was run: the languages, the settings, the model, the facts
    out/<language>/      a kn run of those facts in that language (kill-safe, resumable, as any run)

The facts are those with a version in every language (aligned by id). A restart resumes language by
language; the tables put the languages side by side, a row per (fact, language).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

from .. import checks, likn
from ..neuron import Neuron
from ..version import __version__
from . import config as C
from .directory import CONFIG, LANGUAGES, MULTILINGUAL, RunConfigError, check_out, kind, locked, replace, write_json
from .keyed import resolve
from .engine import run_one
from .result import load_one
from .settings import RunSettings

log = logging.getLogger(__name__)

KIND, FILE = MULTILINGUAL, LANGUAGES


def is_multilingual(out_dir) -> bool:
    """Whether `out_dir` holds a kn multilingual run (its languages.json says so)."""
    return kind(out_dir) == "multilingual"


def check_languages(languages) -> list[str]:
    """Language codes: non-empty strings, no repeats (any code the data has; none is built in)."""
    if isinstance(languages, str):
        languages = [l.strip() for l in languages.split(",") if l.strip()]
    langs = checks.texts(languages, "languages")
    if len(set(langs)) != len(langs):
        raise checks.ArgumentError(f"languages repeats a code: {langs}")
    return langs


def run(lm, facts, out_dir, settings: RunSettings, languages: Sequence[str], *, progress: bool = True,
        resume: bool = True, engine="local") -> MultiRunResult:
    """`kn.run` in every language of `languages`; see the module docstring."""
    langs = check_languages(languages)
    aligned = [f for f in facts if all(f.has(l) for l in langs)]
    if not aligned:
        have = sorted({l for f in facts for l in f.languages})
        raise checks.ArgumentError(f"none of the {len(facts)} facts has a version in every language of {langs}; "
                                   f"the facts have {', '.join(have)}")
    if len(aligned) < len(facts):
        log.info("%d of %d facts lack one of %s; left out", len(facts) - len(aligned), len(facts), langs)
    config = _config(lm, facts, aligned, settings, langs)
    out = resolve(out_dir, config)
    check_out(out, multilingual=True)
    out.mkdir(parents=True, exist_ok=True)
    facts_set = facts.filter(ids=[f.fact_id for f in aligned]) if hasattr(facts, "filter") else aligned
    with locked(out):  # held through every language: a fresh start elsewhere cannot move the run mid-way
        _start(out, config, resume)
        for lang in langs:
            log.info("language %s", lang)
            run_one(lm, facts_set, out / lang, dataclasses.replace(settings, language=lang), progress=progress,
                    resume=resume, engine=engine)
    return load(out)


def _config(lm, facts, aligned, settings: RunSettings, langs: list[str]) -> dict:
    s = settings.asdict()
    s.pop("language")
    return {"kind": KIND, "format": 1, "kn_version": __version__, "languages": langs, "settings": s,
            "model": lm.describe(),
            "data": {"name": getattr(facts, "name", ""), "fingerprint": C.fingerprint(facts),
                     "n_facts": len(aligned), "relations": list(dict.fromkeys(f.relation for f in aligned))}}


def _start(out: Path, config: dict, resume: bool) -> None:
    """Resume the multilingual run in `out` (same config), or move it aside and start anew (fresh:
    `kn.runs.directory.replace`), or start in an empty `out`. The caller holds `locked(out)`."""
    if is_multilingual(out):
        if resume:
            stored = json.loads((out / FILE).read_text(encoding="utf-8"))
            stored_now = {**stored, "settings": _settings_now(stored["settings"])}
            diffs = C.differences(C.identity(config), C.identity(stored_now))
            if diffs:
                raise RunConfigError(f"{out} holds a multilingual run with a different configuration (model, data, "
                                     "languages or common settings), so it cannot be resumed: " + "; ".join(diffs)
                                     + ". Rerun with the same arguments to resume it, or pass resume=False "
                                     "(CLI: --fresh) to replace it.")
            if C.differences(C.comparable(config), C.comparable(stored_now)):  # other phases: each language's run
                write_json(out / FILE, {**config, "created": stored.get("created")})  # recomputes what they change
            return
        replace(out)
    from datetime import datetime, timezone

    write_json(out / FILE, {**config, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def _settings_now(settings: dict) -> dict:
    """A languages.json's settings in the current form (a flat dict of kn before per-phase settings)."""
    return {k: v for k, v in RunSettings.from_dict({**settings, "language": "en"}).asdict().items() if k != "language"}


@dataclass
class MultiRunResult:
    """A multilingual run: its per-language `RunResult`s and the tables side by side.

    facts / prompts / neurons / relations: the runs' tables with a ``language`` column after the key;
    `sets()`: {language: {fact_id: knowledge neurons}} of the located facts; `likn(q)`, `overlap()`,
    `likn_by_layer(q)`: the language-independent neurons (`kn.likn`).
    """

    out_dir: Path
    config: dict
    runs: dict = field(repr=False)

    @property
    def languages(self) -> list[str]:
        return list(self.config["languages"])

    @property
    def complete(self) -> bool:
        return all(l in self.runs and self.runs[l].complete for l in self.languages)

    def _stacked(self, name: str):
        import pandas as pd

        frames = []
        for lang, r in self.runs.items():
            df = r.tables[name].copy()
            df.insert(1, "language", lang)
            frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @cached_property
    def facts(self):
        return self._stacked("facts")

    @cached_property
    def prompts(self):
        return self._stacked("prompts")

    @cached_property
    def neurons(self):
        return self._stacked("neurons")

    @cached_property
    def relations(self):
        return self._stacked("relations")

    def sets(self) -> dict[str, dict[str, list[Neuron]]]:
        """{language: {fact_id: knowledge neurons}} for the facts located in each language."""
        return {l: {fid: r.fact_neurons(fid) for fid in r.located_facts()} for l, r in self.runs.items()}

    def relation_of(self) -> dict[str, str]:
        return dict(zip(self.facts.fact_id, self.facts.relation))

    def likn(self, q: int = 2):
        """(facts, neurons) tables of the language-independent neurons (`kn.likn.likn_tables`)."""
        return likn.likn_tables(self.sets(), self.relation_of(), q=q)

    def likn_by_layer(self, q: int = 2):
        n_layers = self.config["model"].get("n_layers")
        return likn.by_layer(self.sets(), n_layers, q=q)

    def overlap(self):
        """(jaccard, facts) language x language tables (`kn.likn.overlap`)."""
        return likn.overlap(self.sets(), self.languages)


def load(out_dir: str | os.PathLike) -> MultiRunResult:
    """The multilingual run in `out_dir` (languages not started yet are absent from `runs`)."""
    out = Path(out_dir)
    config = json.loads((out / FILE).read_text(encoding="utf-8"))
    if config.get("kind") != KIND:
        raise ValueError(f"{out / FILE} is not a kn multilingual run's")
    runs = {l: load_one(out / l) for l in config["languages"] if (out / l / CONFIG).exists()}
    return MultiRunResult(out, config, runs)
