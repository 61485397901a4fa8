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


def layer_shares(neurons, n_layers: int):
    """The share of all knowledge neurons in each layer, a Series [layer 0..n_layers-1] summing to 1
    (zeros when there is none)."""
    counts = neurons.groupby("layer").size().reindex(range(n_layers), fill_value=0).astype(float)
    return counts / counts.sum() if counts.sum() else counts


def readings(neurons, relations, n_layers: int) -> str:
    """What the map says, in sentences: how many facts and neurons; the layer holding most neurons and the
    share in the top third of layers; the relations whose neurons sit lowest and highest (mean layer);
    how many relations lose at least half of P(gold) when their facts' sets are zeroed, the weakest, and
    the median change of another relation's fact."""
    shares = layer_shares(neurons, n_layers)
    top = n_layers - n_layers // 3
    mean_layer = neurons.groupby("relation").layer.mean().sort_values()
    with_sets = relations[relations.facts_with_neurons > 0]
    out = [f"{int(with_sets.facts_with_neurons.sum())} facts of {len(with_sets)} relations have knowledge neurons, "
           f"{len(neurons)} in all ({len(neurons) / max(1, int(with_sets.facts_with_neurons.sum())):.1f} per fact)."]
    if len(neurons):
        out.append(f"Layer {int(shares.idxmax())} holds the most ({shares.max():.0%}); the top third of the layers "
                   f"({top}-{n_layers - 1}) holds {shares.iloc[top:].sum():.0%}.")
        out.append(f"Lowest on average: {mean_layer.index[0]} (mean layer {mean_layer.iloc[0]:.1f}); highest: "
                   f"{mean_layer.index[-1]} ({mean_layer.iloc[-1]:.1f}).")
    e = with_sets.dropna(subset=["suppression"]).set_index("relation")
    if len(e):
        weakest = e.suppression.idxmax()
        out.append(f"Zeroing a fact's set lowers P(gold) by at least half in {int((e.suppression <= -0.5).sum())} of "
                   f"{len(e)} relations (weakest: {weakest}, {e.suppression[weakest]:+.0%})"
                   + (f"; a fact of another relation changes by {e.control_other_suppression.median():+.0%} "
                      f"(median over relations)." if "control_other_suppression" in e else "."))
    return " ".join(out)


RULE_NAMES = {"riemann_left": "the left Riemann sum", "riemann_trapezoid": "the trapezoid rule",
              "gauss_legendre": "Gauss-Legendre"}


def setting_words(attribution: dict) -> str:
    """A run's attribution setting in words, from its recorded config (``settings["attribution"]``):
    e.g. "IG with Gauss-Legendre, 6 points, over every layer", or "... on the 3 layers a gradient x
    activation screen picks per prompt"; another method by its kind."""
    if attribution.get("kind", "ig") != "ig":
        return f"{attribution['kind']} scores over every layer"
    rule = RULE_NAMES.get(attribution.get("rule"), attribution.get("rule"))
    where = (f"on the {attribution['screen']} layers a gradient x activation screen picks per prompt"
             if attribution.get("screen") else "over every layer")
    return f"IG with {rule}, {attribution.get('steps')} points, {where}"
