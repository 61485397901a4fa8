"""The `update` and `erase` phases' tables read the way the editing chapter reads them (Dai et al.'s
section 5): a summary of the fact updates (rates as means over edits, perplexities and collateral as
medians, since a few edits make them explode), the erasures with their perplexity rises, and both in
words, every number from the tables."""
from __future__ import annotations

import math

OTHER = "other relations' PPL rise"
COLLATERAL = {"intra shift (orders)": "intra_max_shift", "inter shift (orders)": "inter_max_shift",
              "intra flipped": "intra_flipped", "inter flipped": "inter_flipped"}


def updates_summary(u):
    """A Series: edits, relations, success / change rates (knowledge neurons and random ones: means),
    intra- / inter-relation perplexity before and after and the collateral columns (medians; NaN where
    a table made before kn measured collateral lacks them). u: an `updates` table."""
    import pandas as pd

    return pd.Series({"edits": len(u), "relations": u.relation.nunique(), "success": u.success.mean(),
                      "change": u.changed.mean(), "random success": u.random_success.mean(),
                      "random change": u.random_changed.mean(),
                      "intra PPL before": u.intra_ppl_before.median(), "intra PPL after": u.intra_ppl_after.median(),
                      "inter PPL before": u.inter_ppl_before.median(), "inter PPL after": u.inter_ppl_after.median(),
                      **{n: (u[c].median() if c in u else math.nan) for n, c in COLLATERAL.items()}})


def erasures(erased):
    """The `erased` table by relation, with the erased relation's perplexity rise ("PPL rise", after /
    before) and the other relations' (`OTHER`)."""
    e = erased.set_index("relation")
    return e.assign(**{"PPL rise": e.ppl_after / e.ppl_before, OTHER: e.other_ppl_after / e.other_ppl_before})


def readings(model: str, u, e) -> str:
    """One model's updates (`updates_summary`) and erasures (`erasures`) in words (markdown)."""
    collateral = (f" A median edit moved some other fact of its relation by {u['intra shift (orders)']:.1f} orders of "
                  f"magnitude and of another relation by {u['inter shift (orders)']:.1f}, flipping the top-1 answer of "
                  f"{u['intra flipped']:.0%} / {u['inter flipped']:.0%} of their prompts."
                  if not math.isnan(u["intra shift (orders)"]) else "")
    return (f"**`{model}`**: {u['edits']:.0f} edits in {u['relations']:.0f} relations. Through the knowledge neurons: "
            f"success {u['success']:.1%}, change {u['change']:.1%}; through as many random neurons of the same layers: "
            f"{u['random success']:.1%} and {u['random change']:.1%}. Median intra-relation perplexity "
            f"{u['intra PPL before']:.1f} -> {u['intra PPL after']:.1f}, inter-relation {u['inter PPL before']:.1f} -> "
            f"{u['inter PPL after']:.1f}." + collateral
            + f" Erasing {', '.join(e.index)}: accuracy "
            + ", ".join(f"{r} {row.acc_before:.1%} -> {row.acc_after:.1%}" for r, row in e.iterrows())
            + "; perplexity of the erased relation's prompts vs the other relations' prompts: "
            + ", ".join(f"{r} x{row['PPL rise']:.1f} vs x{row[OTHER]:.1f}" for r, row in e.iterrows()) + ".")


def erasure_specificity(e) -> str:
    """Whether each erasure (rows of `erasures`, any index) raised its relation's perplexity more than the
    other relations', in words (markdown)."""
    if not len(e):
        return "Nothing recorded yet."
    fails = e[e["PPL rise"] <= e[OTHER]]
    text = (f"The erased relation's perplexity rose more than the other relations' in {len(e) - len(fails)} of "
            f"{len(e)} recorded erasures")
    if not len(fails):
        return text + ": the paper's claim that erasing is specific to the relation holds in all of them."
    return (text + "; in " + ", ".join(f"{_label(k)} (x{row['PPL rise']:.1f} against x{row[OTHER]:.1f} for the others)"
                                       for k, row in fails.iterrows())
            + " it did not: there the paper's claim that erasing is specific to the relation fails.")


def _label(key) -> str:
    """"`model` relation" for a (model, relation) index, the relation otherwise."""
    return f"`{key[0]}` {key[1]}" if isinstance(key, tuple) else str(key)
