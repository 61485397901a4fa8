"""Reading a multilingual run of an older kn, one kn run per language over the same facts:

    out/languages.json   what was run: the languages, the settings, the model, the facts
    out/<language>/      a kn run of those facts in that language

A run in several languages is now one run whose unit of work is (fact, language) (`kn.run(...,
languages=[...])`); `kn.load_run` still reads these directories, as a `MultiRunResult` with the same
reading methods as a `RunResult`.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .. import likn
from ..neuron import Neuron
from .directory import CONFIG, LANGUAGES, MULTILINGUAL, kind
from .result import load_one

log = logging.getLogger(__name__)

KIND, FILE = MULTILINGUAL, LANGUAGES


def is_multilingual(out_dir) -> bool:
    """Whether `out_dir` holds a kn multilingual run (its languages.json says so)."""
    return kind(out_dir) == "multilingual"


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
            if "language" in df.columns:  # its language's run, rebuilt by this kn: the column is there
                df["language"] = lang
            else:
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
