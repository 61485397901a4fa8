"""A dataset run at scale read the way the at-scale chapter reads it (Dai et al.'s table 2 and its
controls): per relation, the overall means, the findings in words, the activation baseline beside IG.
Every function takes a run's or a recording's tables (`facts`, `neurons`, `relations`)."""
from __future__ import annotations

import math

EFFECTS = ["suppression", "amplification", "control_other_suppression", "control_other_amplification",
           "control_same_suppression", "control_same_amplification"]
COLUMNS = ["facts_verified", "neurons_per_fact", "share", *EFFECTS, "max_facts_sharing"]


def relation_table(relations):
    """The relations table's `COLUMNS` by relation, and a "mean" row: unweighted means over relations,
    the verified facts summed, the sharing count left empty."""
    r = relations.set_index("relation")
    t = r[COLUMNS].astype(float)
    t.loc["mean"] = t.mean(numeric_only=True)
    t.loc["mean", ["facts_verified", "max_facts_sharing"]] = [r["facts_verified"].sum(), math.nan]
    return t


def stats(facts, neurons, relations, n_layers: int, activation=None) -> dict:
    """What `readings` says: mean effects over relations, how many facts have neurons, fact-neuron pairs,
    distinct neurons and those found in several relations, the layer with the most pairs, the relations
    whose share tuning stopped at 0.95, the most shared neuron; with the activation run's relations
    table, its neurons per fact and effects."""
    r, n, f = relations, neurons, facts
    pairs = n.groupby(["layer", "index"]).agg(relations=("relation", "nunique"))
    by_layer = n.groupby("layer").size()
    mean = lambda c: float(r[c].mean())  # noqa: E731
    st = {"suppression": mean("suppression"), "amplification": mean("amplification"),
          "other_sup": mean("control_other_suppression"), "other_amp": mean("control_other_amplification"),
          "same_sup": mean("control_same_suppression"), "same_amp": mean("control_same_amplification"),
          "facts": len(f), "facts_with_neurons": int((f["n_neurons"] > 0).sum()),
          "fact_neuron_pairs": len(n), "distinct": len(pairs), "multi_relation": int((pairs.relations > 1).sum()),
          "top_layer": int(by_layer.idxmax()), "top_layer_pairs": int(by_layer.max()), "last_layer": n_layers - 1,
          "ceiling_relations": int((r["share"] >= 0.95 - 1e-9).sum()), "relations": len(r),
          "most_shared": int(r["max_facts_sharing"].max())}
    if activation is not None:
        st |= {"act_neurons": float(activation["neurons_per_fact"].mean()),
               "act_sup": float(activation["suppression"].mean()), "act_amp": float(activation["amplification"].mean()),
               "act_other_amp": float(activation["control_other_amplification"].mean())}
    return st


def readings(model: str, s: dict, paper_sup: float, paper_amp: float) -> str:
    """`stats` in words (markdown), beside the paper's suppression / amplification on BERT."""
    vs = "stronger than" if abs(s["suppression"]) > abs(paper_sup) else "weaker than"
    lines = [
        f"**`{model}`**, {s['facts']} known facts of {s['relations']} relations:",
        f"- Suppressing a fact's knowledge neurons changes the gold probability by {s['suppression']:+.1%}, "
        f"amplifying them by {s['amplification']:+.1%} ({vs} the paper's {paper_sup:+.2%} / {paper_amp:+.2%} on BERT).",
        f"- The paper's control (the neurons applied to a fact of another relation) moves that fact by "
        f"{s['other_sup']:+.1%} / {s['other_amp']:+.1%}; applied to another fact of the *same* relation they move "
        f"it by {s['same_sup']:+.1%} / {s['same_amp']:+.1%}.",
        f"- {s['facts_with_neurons']} of {s['facts']} facts got at least one knowledge neuron: "
        f"{s['fact_neuron_pairs']} fact-neuron pairs, {s['distinct']} distinct neurons, {s['multi_relation']} of "
        f"them found in more than one relation; the most shared neuron of a relation serves up to "
        f"{s['most_shared']} of its facts. The share tuning stopped at its 0.95 ceiling on "
        f"{s['ceiling_relations']} of {s['relations']} relations.",
        f"- Layer {s['top_layer']} holds the most fact-neuron pairs ({s['top_layer_pairs']} of "
        f"{s['fact_neuron_pairs']}; the last layer is {s['last_layer']}).",
    ]
    if "act_sup" in s:
        lines.append(
            f"- The activation baseline (raw activations as scores, threshold 0.5 of the largest, same facts) "
            f"finds {s['act_neurons']:.1f} neurons per fact, whose suppression changes the gold probability by "
            f"{s['act_sup']:+.1%} and whose amplification by {s['act_amp']:+.1%} (on other relations' facts: "
            f"{s['act_other_amp']:+.1%}).")
    else:
        lines.append("- The activation baseline of this model is not recorded yet.")
    return "\n".join(lines)


def beside(ig_relations, activation_relations):
    """IG's effects and the activation baseline's, by relation (the same facts)."""
    import pandas as pd

    ig, act = (t.set_index("relation") for t in (ig_relations, activation_relations))
    return pd.DataFrame({"IG sup.": ig["suppression"], "IG amp.": ig["amplification"],
                         "act. neurons/fact": act["neurons_per_fact"], "act. sup.": act["suppression"],
                         "act. amp.": act["amplification"], "act. other rel. sup.": act["control_other_suppression"],
                         "act. other rel. amp.": act["control_other_amplification"]})


def headline(h: dict) -> dict:
    """A run's headline (`RunResult.headline()`: means over relations) under the chapter's labels."""
    return {"suppression": h["suppression"], "amplification": h["amplification"],
            "control (other relation) sup.": h["control_other_suppression"],
            "control (other relation) amp.": h["control_other_amplification"],
            "control (same relation) sup.": h["control_same_suppression"],
            "control (same relation) amp.": h["control_same_amplification"],
            "neurons per fact": h["neurons_per_fact"]}
