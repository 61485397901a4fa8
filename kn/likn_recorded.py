"""Reads of recorded runs in several languages (`kn record`, book/results/likn/<name>: the tables
likn, neurons and, where the phases ran, crosslingual and crosslingual_edits): how many facts have
language-independent knowledge neurons, and each recording read against Chen et al. (2024)'s claim.
A recording is a `kn.recording.Recording` (its provenance holds the run's config)."""
from __future__ import annotations

from . import crosslingual, likn


def setting(rec) -> tuple[list[str], int]:
    """(languages, n_layers) of the run a recording holds."""
    from .runs.config import languages_of

    cfg = rec.provenance["run_config"]
    return languages_of(cfg), int(cfg["model"]["n_layers"])


def counts(recordings, q: int = 2):
    """A row per {model: recording}: its languages, facts, those with neurons in >= 2 languages, with
    LIKN (in all their languages) and LIKN per fact, with neurons in >= q and those per fact (the
    per-fact means over the facts with neurons in >= 2 languages), rounded to 3 decimals."""
    import pandas as pd

    rows = []
    for m, r in recordings.items():
        lf = r["likn"]
        two = lf[lf.languages_with_neurons >= 2]
        rows.append({"model": m, "languages": ", ".join(setting(r)[0]),
                     "facts": lf.fact_id.nunique(), "with neurons in >= 2 languages": len(two),
                     "with LIKN (all languages)": int((two.n_likn > 0).sum()), "LIKN per fact": two.n_likn.mean(),
                     f"with neurons in >= {q}": int((two.n_likn_q > 0).sum()),
                     f"in >= {q} per fact": two.n_likn_q.mean()})
    return pd.DataFrame(rows).set_index("model").round(3)


def against_claim(name: str, rec, q: int = 2, seed: int = 0) -> str:
    """Markdown: a recording against the claim that LIKN exist, sit in the top layers (the top third)
    and, suppressed, change the fact in every language more than another language's own neurons do;
    with the cross-lingual edits' reach (in the edited language and in the others) where recorded."""
    langs, n_layers = setting(rec)
    lf = rec["likn"]
    two = lf[lf.languages_with_neurons >= 2]
    layers = likn.by_layer(likn.sets_from_table(rec["neurons"]), n_layers, q=q)
    top = layers.layer >= n_layers - n_layers // 3

    def share(col):
        return layers.loc[top, col].sum() / max(layers[col].sum(), 1)

    lines = [f"**{name}** ({', '.join(langs)}, {lf.fact_id.nunique()} facts):",
             f"- LIKN exist for {int((two.n_likn > 0).sum())} of {len(two)} facts with neurons in at least two "
             f"languages ({(two.n_likn > 0).mean():.0%}); neurons found in at least {q} languages for "
             f"{int((two.n_likn_q > 0).sum())} ({(two.n_likn_q > 0).mean():.0%}).",
             f"- In the top third of the layers ({n_layers - n_layers // 3}-{n_layers - 1}): {share('likn'):.0%} of "
             f"the LIKN, {share(f'at_least_{q}'):.0%} of the neurons in >= {q} languages, {share('one_language'):.0%} "
             f"of the one-language neurons."]
    if "crosslingual" in rec.tables:
        g = crosslingual.summary(rec["crosslingual"], seed=seed).set_index(crosslingual.KEYS)
        for b in langs:
            if ("likn", "all", b) not in g.index:
                continue
            li = g.loc[("likn", "all", b)]
            cross = g.loc[[("mono", a, b) for a in langs if a != b and ("mono", a, b) in g.index]]
            lines.append(f"- Measured in **{b}**: suppressing the LIKN, related - unrelated "
                         f"{li.suppression_diff:+.1%} [{li.suppression_diff_low:+.1%}, {li.suppression_diff_high:+.1%}] "
                         f"over {li.facts:.0f} facts; another language's own neurons {cross.suppression_diff.mean():+.1%} "
                         f"(mean over {len(cross)} languages, from {int(cross.facts.min())}-{int(cross.facts.max())} facts).")
    if "crosslingual_edits" in rec.tables and len(rec["crosslingual_edits"]):
        e = crosslingual.edit_ratios(rec["crosslingual_edits"])
        e = e.assign(where=e.measured.eq(e.edit_language).map({True: "edited language", False: "other languages"}))
        t = e.groupby(["neurons", "where"]).agg(success=("success", "mean"), changed=("changed", "mean"),
                                                p_new=("p_new_ratio", "median"))
        for (n, w), v in t.iterrows():
            lines.append(f"- Edit through {'the LIKN' if n == 'likn' else 'one language’s own neurons'}, measured in "
                         f"the {w}: the new object became top-1 on {v.success:.0%} of the prompts, the old one was "
                         f"displaced on {v.changed:.0%}, P(new) x{v.p_new:.2g} (median).")
    return "\n".join(lines)
