"""Where a dataset's knowledge neurons sit: a relation x layer table of knowledge neurons per fact, from a
run's `neurons` table, beside each relation's suppression and amplification effects (its `relations`
table). The whole-PARAREL map of issue 31 and the at-scale chapter's heat map read it."""
from __future__ import annotations

EFFECTS = ("suppression", "amplification", "control_other_suppression")


def layer_map(neurons, relations, n_layers: int):
    """A DataFrame [relation x layer 0..n_layers-1]: knowledge neurons in that layer per fact of the
    relation that has a set (`relations.facts_with_neurons`), relations in the order of `relations`.

    neurons: a run's neurons table (columns relation, fact_id, layer); relations: its relations table
    (columns relation, facts_with_neurons)."""
    import pandas as pd

    counts = neurons.groupby(["relation", "layer"]).size().unstack("layer")
    counts = counts.reindex(index=list(relations.relation), columns=range(n_layers)).fillna(0)
    per_fact = relations.set_index("relation").facts_with_neurons.reindex(counts.index)
    out = counts.div(per_fact.where(per_fact > 0), axis=0)
    out.columns = pd.Index(range(n_layers), name="layer")
    return out


def effects(relations):
    """The relations' `EFFECTS` columns that the table has, indexed by relation."""
    return relations.set_index("relation")[[c for c in EFFECTS if c in relations]]
