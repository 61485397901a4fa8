"""Recorded facts to explore without a kernel: a few facts per model and language from a recorded run.

`facts(directories)` reads recordings of `kn record` (book/results/likn/<model>: facts.csv, one row
per fact and language, and neurons.csv, one row per knowledge neuron) and picks, per model, the
first `per_model` facts (by fact id) located in every language the model was run in, so a reader can
compare one fact across languages. Each is a `RecordedFact`: its neurons with how many paraphrases
found each, and the recorded effect of suppressing / amplifying them. `grid` is the fact's
layer x neuron matrix that the book's static explorer shades (`kn.widgets.recorded_explorer` draws).
Nothing here loads a model: the numbers are the recording's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from . import checks


@dataclass(frozen=True)
class RecordedFact:
    model: str
    language: str
    fact_id: str
    relation: str
    subject: str
    answer: str
    n_prompts: int
    neurons: pd.DataFrame   # layer, index, n_prompts_found: one row per knowledge neuron, by layer
    effect: dict            # p_before, p_suppressed, p_amplified, suppression, amplification, control_other_suppression
    n_layers: int           # the model's layers (its recorded config; else the deepest recorded neuron + 1)
    source: str             # the recording's directory name and the command that made it

    @property
    def label(self) -> str:
        return f"{self.model} · {self.language} · {self.relation}: {self.subject} → {self.answer}"


EFFECT = ["p_before", "p_suppressed", "p_amplified", "suppression", "amplification", "control_other_suppression"]


def facts(directories: Iterable[str | Path], per_model: int = 2) -> list[RecordedFact]:
    """Per recording (one model each), its first `per_model` facts located in all its languages, each
    in every language; ordered by model, fact, language."""
    per_model = checks.integer(per_model, "per_model", low=1)
    out: list[RecordedFact] = []
    for d in map(Path, directories):
        if not (d / "facts.csv").is_file() or not (d / "neurons.csv").is_file():
            raise checks.ArgumentError(f"{d} is not a recording with facts.csv and neurons.csv (kn record writes "
                                       "them); pass a directory of book/results/likn")
        table, neurons = pd.read_csv(d / "facts.csv"), pd.read_csv(d / "neurons.csv")
        provenance = json.loads((d / "provenance.json").read_text()) if (d / "provenance.json").is_file() else {}
        recorded_model = provenance.get("run_config", {}).get("model", {})
        model = recorded_model.get("model") or d.name
        located = table[table["n_neurons"].fillna(0) > 0]
        languages = sorted(table["language"].unique())
        everywhere = sorted(f for f, g in located.groupby("fact_id") if set(g["language"]) == set(languages))
        n_layers = int(recorded_model.get("n_layers") or neurons["layer"].max() + 1)
        for fact_id in everywhere[:per_model]:
            for language in languages:
                row = located[(located["fact_id"] == fact_id) & (located["language"] == language)].iloc[0]
                mine = neurons[(neurons["fact_id"] == fact_id) & (neurons["language"] == language)]
                out.append(RecordedFact(
                    model, language, fact_id, row["relation"], row["subject"], row["answer"], int(row["n_prompts"]),
                    mine[["layer", "index", "n_prompts_found"]].sort_values(["layer", "index"]).reset_index(drop=True),
                    {k: float(row[k]) for k in EFFECT}, n_layers,
                    f"{d.name}: {provenance.get('command', 'command not recorded')}"))
    return out


def grid(fact: RecordedFact) -> pd.DataFrame:
    """Layers (rows, the last on top) x the fact's neurons (columns "layer:index"): the share of the
    fact's paraphrases that found the neuron where it sits, NaN elsewhere."""
    cols = [f"{l}:{i}" for l, i in zip(fact.neurons["layer"], fact.neurons["index"])]
    frame = pd.DataFrame(float("nan"), index=pd.RangeIndex(fact.n_layers - 1, -1, -1, name="layer"), columns=cols)
    for col, (l, found) in zip(cols, zip(fact.neurons["layer"], fact.neurons["n_prompts_found"])):
        frame.loc[int(l), col] = found / fact.n_prompts
    return frame
