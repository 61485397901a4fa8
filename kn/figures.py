"""Drawings of kn's results as matplotlib Figures (no pyplot state; a chapter shows one by displaying
it): an attribution's heatmap of the strongest neurons beside its by-layer profile (also as PNG bytes,
for the fact explorer), the specificity curves, and the views of a run in several languages (LIKN by
layer and overlap, cross-lingual effects and edits, coverage per language)."""
from __future__ import annotations

import io
from typing import Iterable

import numpy as np
import torch
from matplotlib.figure import Figure

from .exploring import heatmap_frame, layer_profile, strongest_columns
from .neuron import Neuron


class NotebookFigure(Figure):
    """A Figure that a notebook shows as a PNG when displayed (no pyplot figure manager draws it), the
    way the inline backend draws pyplot's: at the figure's dpi, cropped to what is drawn."""

    def _repr_png_(self) -> bytes:
        return figure_png(self, bbox_inches="tight")


def attribution_figure(scores: torch.Tensor, *, n: int = 24, neurons: Iterable[Neuron] = (), title: str = ""):
    """A matplotlib Figure: the heatmap of scores [n_layers, width] over the strongest neuron columns
    (located `neurons` boxed), beside the by-layer profile (sum of positive scores)."""
    neurons = list(neurons)
    cols = strongest_columns(scores, n, include=sorted({i for _, i in neurons}))
    frame, profile = heatmap_frame(scores, cols), layer_profile(scores)
    n_layers = scores.shape[0]
    fig = NotebookFigure(figsize=(min(4 + 0.28 * len(cols), 13), 1.6 + 0.22 * n_layers), dpi=90, layout="constrained")
    heat, bars = fig.subplots(1, 2, sharey=True, width_ratios=[4, 1])
    v = float(np.abs(frame.to_numpy()).max()) or 1.0
    im = heat.imshow(frame.to_numpy(), aspect="auto", origin="lower", cmap="RdBu_r", vmin=-v, vmax=v,
                     interpolation="nearest")
    heat.set_xticks(range(len(cols)), [str(c) for c in cols], rotation=90, fontsize=7)
    heat.set_yticks(range(n_layers), [str(l) for l in range(n_layers)], fontsize=7)
    heat.set_xlabel("neuron (the strongest columns)")
    heat.set_ylabel("layer")
    where = {c: x for x, c in enumerate(cols)}
    boxed = [(where[i], l) for l, i in neurons if i in where]
    if boxed:
        xs, ys = zip(*boxed)
        heat.scatter(xs, ys, marker="s", s=70, facecolors="none", edgecolors="black", linewidths=1.2,
                     label="knowledge neuron")
        heat.legend(loc="upper left", bbox_to_anchor=(0, -0.12), fontsize=7, frameon=False)
    fig.colorbar(im, ax=heat, shrink=0.8, pad=0.01, label="attribution")
    bars.barh(range(n_layers), profile["positive sum"].to_numpy(), color="#4c72b0")
    bars.set_xlabel("sum of positive\nscores", fontsize=8)
    bars.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def figure_png(fig, **savefig) -> bytes:
    """PNG bytes of a matplotlib Figure (no pyplot state involved); `savefig`: more options of it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    return buf.getvalue()


def specificity_figure(summaries: dict):
    """A Figure, a panel per {title: `kn.specificity.summarize` output}: the median change of P(gold)
    of the fact and of its other- and same-relation controls against the common-neuron filter's share,
    per scope (the raw sets as thin lines, within 5% of zero shaded)."""
    fig = NotebookFigure(figsize=(5.5 * len(summaries), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(summaries), sharey=True))
    colors = {"fact": "C0", "other": "C3", "same": "C1"}
    for ax, (title, s) in zip(axes, summaries.items()):
        raw = s[s.scope == "none"]
        for scope, ls in (("relation", "-"), ("run", ":")):
            g = s[s.scope == scope].sort_values("share")
            for col, color in colors.items():
                if len(g):
                    ax.plot(g.share * 100, g[col] * 100, ls=ls, marker="o", color=color, label=f"{col} ({scope})")
        for col, color in colors.items():
            if len(raw):
                ax.axhline(raw[col].iloc[0] * 100, color=color, lw=0.8, alpha=0.5)
        ax.axhspan(-5, 5, color="grey", alpha=0.15)
        ticks = sorted(set(s.share.dropna() * 100))
        ax.set(xscale="log", xlabel="dropped: neurons in more than this % of the scope's facts",
               ylabel="median change of P(gold) %", title=title)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    axes[-1].legend(fontsize=7, ncol=2, loc="lower left")
    return fig


def layer_map_figure(per_fact, effects=None, title: str = ""):
    """A Figure: the heat map of knowledge neurons per fact [relation x layer] (`kn.layer_map.layer_map`,
    square-root colour scale), and beside it, per relation, the effects of zeroing each fact's set
    (`kn.layer_map.effects`: change of P(gold) for the fact, and for a fact of another relation)."""
    n_rel, n_layers = per_fact.shape
    fig = NotebookFigure(figsize=(min(4 + 0.35 * n_layers, 14) + (3 if effects is not None else 0), 1.5 + 0.25 * n_rel),
                 dpi=90, layout="constrained")
    if effects is not None:
        heat, side = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1])
    else:
        heat, side = fig.subplots(1, 1), None
    from matplotlib.colors import PowerNorm

    # square-root colour scale: one relation with many neurons in a layer would leave the rest dark
    im = heat.imshow(per_fact.to_numpy(dtype=float), aspect="auto", cmap="viridis", interpolation="nearest",
                     norm=PowerNorm(0.5, vmin=0))
    heat.set_xticks(range(n_layers), [str(c) for c in per_fact.columns], fontsize=7)
    heat.set_yticks(range(n_rel), [str(r) for r in per_fact.index], fontsize=7)
    heat.set(xlabel="layer", ylabel="relation")
    heat.grid(False)
    fig.colorbar(im, ax=heat, shrink=0.8, pad=0.01, label="knowledge neurons per fact")
    if side is not None:
        e = effects.reindex(per_fact.index)
        y = np.arange(n_rel)
        h = 0.8 / max(1, e.shape[1])
        for j, c in enumerate(e.columns):
            side.barh(y + (j - (e.shape[1] - 1) / 2) * h, e[c].to_numpy(dtype=float) * 100, height=h, label=c)
        side.axvline(0, color="black", lw=0.8)
        side.set_xlabel("change of P(gold), %")
        side.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def likn_layers_figure(sets, n_layers: int, languages, *, q: int = 2, title: str = ""):
    """A Figure of a run in several languages (`sets`: {language: {fact_id: neurons}}): its knowledge
    neurons by layer (`kn.likn.by_layer`: one language, >= q, all: LIKN; log scale) beside the
    language x language mean Jaccard overlap of a fact's neuron sets (`kn.likn.overlap`)."""
    import seaborn as sns
    from .likn import by_layer, overlap

    fig = NotebookFigure(figsize=(11, 3.6))
    axes = fig.subplots(1, 2)
    by_layer(sets, n_layers, q=q).set_index("layer").plot.bar(ax=axes[0], width=0.8, logy=True)
    axes[0].set(ylabel="(fact, neuron) pairs, log scale", title=f"{title}knowledge neurons by layer")
    jac, _ = overlap(sets, languages)
    sns.heatmap(jac.astype(float), annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=axes[1])
    axes[1].set_title("mean Jaccard overlap of a fact's neuron sets")
    fig.tight_layout()
    return fig


def crosslingual_effects_figure(summ, title: str = ""):
    """A Figure of a `kn.crosslingual.summary`: a horizontal bar per (condition: source in measured) of
    the related - unrelated difference with its interval, suppression and amplification side by side
    (colored by condition: likn, mono, union)."""
    import seaborn as sns
    d = summ.assign(label=summ.condition + ": " + summ.source + " in " + summ.measured)
    fig = NotebookFigure(figsize=(12, 0.3 * len(d) + 1.5))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, what in zip(axes, ["suppression", "amplification"]):
        y, lo, hi = (d[f"{what}_diff{s}"] * 100 for s in ("", "_low", "_high"))
        ax.barh(d.label, y, xerr=[y - lo, hi - y], capsize=3,
                color=[sns.color_palette()[i % 3] for i in d.condition.map({"likn": 0, "mono": 1, "union": 2})])
        ax.axvline(0, color="black", lw=0.8)
        ax.set(xlabel="related - unrelated, % points", title=f"{title}{what} (95% CI over facts)")
    fig.tight_layout()
    return fig


def crosslingual_edits_figure(edits, title: str = ""):
    """A Figure of a `kn.crosslingual.edit_table`: the mean P(new) after / before an edit per measured
    language (the edited one marked), a bar per kind of neurons edited through (hue), log scale."""
    import seaborn as sns
    from .crosslingual import edit_ratios

    e = edit_ratios(edits)
    fig = NotebookFigure(figsize=(7, 3.5))
    ax = fig.subplots()
    sns.barplot(e.assign(where=e.measured.where(e.measured != e.edit_language, e.measured + " (edited)")),
                x="where", y="p_new_ratio", hue="neurons", errorbar=None, ax=ax)
    ax.set_yscale("log")
    ax.axhline(1, color="black", lw=0.8)
    ax.set(xlabel="measured in", ylabel="P(new) after / before", title=f"{title}an edit's reach across languages")
    fig.tight_layout()
    return fig


def coverage_figure(coverage):
    """A Figure of a `kn coverage` table indexed by language: facts whose answer is one token, several,
    or that have no usable prompt (stacked bars), beside the share of the probed facts known."""
    fig = NotebookFigure(figsize=(10, 3))
    ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    coverage[["single_token", "multi_token", "no_prompt"]].plot.bar(stacked=True, ax=ax[0], width=0.8)
    ax[0].set(ylabel="facts", xlabel="", title="answers: one token, several, or no usable prompt")
    coverage["known_share"].plot.bar(ax=ax[1], color="C2", width=0.8)
    ax[1].set(ylabel="share known", xlabel="", ylim=(0, 1), title=f"known, of {int(coverage.probed.max())} probed")
    fig.tight_layout()
    return fig


def quality_figure(quality, title: str = "per-fact difference (95% CI)"):
    """A Figure of a `kn.quality.localization_quality` table: per (method, language) the mean per-fact
    difference related - unrelated with its interval, suppression and amplification side by side (each
    panel titled "suppression: " / "amplification: " + `title`)."""
    import seaborn as sns
    fig = NotebookFigure(figsize=(11, 3.8))
    axes = fig.subplots(1, 2, sharey=False)
    d = quality.assign(x=quality.method + ", " + quality.language)
    for ax, what in zip(axes, ["suppression", "amplification"]):
        y, lo, hi = (d[f"{what}_diff{s}"] * 100 for s in ("", "_low", "_high"))
        ax.bar(d.x, y, yerr=[y - lo, hi - y], capsize=4, color=sns.color_palette()[:len(d)])
        ax.axhline(0, color="black", lw=0.8)
        ax.set(ylabel="related - unrelated, % points", title=f"{what}: {title}")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def dkn_mean_figure(statements):
    """A Figure of a statements table (`kn.statements`: relation, kind "true" / "false", dkn_mean): the
    mean attribution over each relation's DKN set of every statement, true and false side by side."""
    import seaborn as sns
    fig = NotebookFigure(figsize=(7, 3.4))
    ax = fig.subplots()
    if statements.dkn_mean.notna().any():
        sns.stripplot(statements, x="dkn_mean", y="relation", hue="kind", dodge=True, ax=ax,
                      palette={"true": "seagreen", "false": "firebrick"})
    ax.set(xlabel="mean attribution over the relation's DKN set", ylabel="")
    fig.tight_layout()
    return fig


def roc_figure(decided):
    """A Figure of `kn.factcheck.decisions`: per method the ROC curve of detecting false statements from
    its score (lower: more likely false; draw 0 of the random sets), its AUC in the legend."""
    from .factcheck import roc_auc, roc_curve

    fig = NotebookFigure(figsize=(5.2, 5))
    ax = fig.subplots()
    for method, g in decided[decided.draw == 0].groupby("method", sort=False):
        fpr, tpr = roc_curve(g.is_false.to_numpy(bool), -g.score.to_numpy(float))
        ax.plot(fpr, tpr, marker=".", label=f"{method} (AUC {roc_auc(g.is_false, -g.score):.2f})")
    ax.plot([0, 1], [0, 1], ls=":", c="gray")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="detecting false statements")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def degenerate_layers_figure(pairs, neurons, n_layers: int):
    """A Figure of a run's degenerate pairs (layer_a, layer_b per pair): how many pairs join each two
    layers (lower triangle), beside the share of the pairs' neurons and of the knowledge neurons
    (`neurons`: a layer column) in each layer."""
    import pandas as pd
    import seaborn as sns
    fig = NotebookFigure(figsize=(11, 3.8))
    axes = fig.subplots(1, 2)
    grid = np.zeros((n_layers, n_layers), int)
    for a, b in zip(pairs.layer_a.astype(int), pairs.layer_b.astype(int)):
        grid[max(a, b), min(a, b)] += 1
    sns.heatmap(np.where(np.tril(np.ones_like(grid)) > 0, grid, np.nan), cmap="viridis", ax=axes[0],
                cbar_kws={"label": "pairs"})
    axes[0].set(xlabel="layer of one neuron", ylabel="layer of the other", title="degenerate pairs by layers")
    dkn_layers = pd.Series(np.r_[pairs.layer_a, pairs.layer_b].astype(int)).value_counts()
    kn_layers = neurons.layer.astype(int).value_counts()
    pd.DataFrame({"in degenerate pairs": dkn_layers / max(dkn_layers.sum(), 1),
                  "knowledge neurons": kn_layers / max(kn_layers.sum(), 1)}).reindex(range(n_layers)).fillna(0) \
        .plot.bar(ax=axes[1], width=0.85)
    axes[1].set(xlabel="layer", ylabel="share of neurons", title="where they sit")
    fig.tight_layout()
    return fig


def pair_effects_figure(effects, single: float, pair: float):
    """A Figure of a run's pair_effects: boxes of P / P0 with one neuron of a pair off (each) and both
    (`kn.dkn_tables.relative_effects`), against the single-neuron rule's line (1 - single) and the
    pair rule's (1 - pair)."""
    from .dkn_tables import relative_effects

    rel = relative_effects(effects)
    fig = NotebookFigure(figsize=(7, 3.6))
    ax = fig.subplots()
    if len(rel):
        ax.boxplot([rel[c].dropna() for c in rel], tick_labels=list(rel.columns), patch_artist=True,
                   boxprops={"facecolor": "lightsteelblue"}, medianprops={"color": "black"})
    ax.axhline(1 - single, ls=":", c="gray")
    ax.axhline(1 - pair, ls="--", c="firebrick", label=f"pair rule: below {1 - pair:.2f}")
    ax.set(ylabel="P / P0", title=f"{len(effects)} (prompt, pair) measurements, {effects.fact_id.nunique()} facts")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def suppression_curves_figure(curves, pair: float):
    """A Figure of P / P0 (`curves`: k top neurons suppressed (index) x facts) per fact (thin) and their
    median (thick), log scale, against the pair rule's line (1 - pair)."""
    fig = NotebookFigure(figsize=(7, 3.6))
    ax = fig.subplots()
    ax.plot(curves.index, curves.to_numpy(), c="steelblue", alpha=0.3, lw=1)
    ax.plot(curves.index, curves.median(axis=1), c="navy", lw=2.5, label="median over facts")
    ax.axhline(1 - pair, ls="--", c="firebrick")
    ax.set(xlabel="top neurons suppressed", ylabel="P / P0", yscale="log", title="suppressed in attribution order")
    ax.legend()
    fig.tight_layout()
    return fig


def consistency_figure(kinds, threshold: float):
    """A Figure of `kn.query.consistency_kinds`: the histogram of the facts' consistency by kind, the
    threshold dashed."""
    import seaborn as sns
    fig = NotebookFigure(figsize=(7, 3))
    ax = fig.subplots()
    sns.histplot(kinds, x="consistency", hue="kind", bins=20, binrange=(0, 1), ax=ax)
    ax.axvline(threshold, ls="--", c="gray")
    ax.set(xlabel="mean pairwise Jaccard of the paraphrases' neuron sets (stand-in)", ylabel="facts")
    fig.tight_layout()
    return fig


def query_sets_figure(held):
    """A Figure of a query_localization table with a kind column: per held paraphrase the change with
    the query-level set suppressed against the fact-level set's, the diagonal drawn."""
    import seaborn as sns
    fig = NotebookFigure(figsize=(4.6, 4.4))
    ax = fig.subplots()
    if len(held):
        sns.scatterplot(held, x="fact_set_change", y="query_set_change", hue="kind", ax=ax, s=50)
    ax.plot([-1, 0.5], [-1, 0.5], c="gray", lw=0.8)
    ax.set(xlabel="fact-level set suppressed", ylabel="query-level set suppressed", xlim=(-1.05, 0.5),
           ylim=(-1.05, 0.5))
    fig.tight_layout()
    return fig


def edit_methods_figure(panels: dict, goals: dict | None = None,
                        metrics=("reliability", "generalization", "locality"), goal_label: str = "the goal"):
    """A Figure of `kn.edits.summary.by_method` tables, one panel per {title: table} (e.g. single edits,
    batches of 100): per metric a bar per method (its rows in order; a method and neuron set where the
    table has them), the mean in % with its 95% interval; {title: {metric: goal}} in `goals` drawn dashed
    across that metric's bars (`goal_label` says whose in the legend)."""
    from matplotlib.patches import Patch

    def names_of(table) -> list[str]:
        return [m if not isinstance(n, str) or not n or n == "own" else f"{m} ({n})"
                for m, n in zip(table.method, table.get("neurons_from", [""] * len(table)))]

    goals = goals or {}
    # one colour per method (and set) in every panel, though a panel may lack some (a method that failed)
    colour = {n: f"C{i}" for i, n in enumerate(dict.fromkeys(n for t in panels.values() for n in names_of(t)))}
    fig = NotebookFigure(figsize=(4.2 * len(panels) + 1.6, 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)[0])
    for ax, (title, table) in zip(axes, panels.items()):
        width = 0.8 / max(len(table), 1)
        for i, (name, (_, row)) in enumerate(zip(names_of(table), table.iterrows())):
            x = np.arange(len(metrics)) + (i - (len(table) - 1) / 2) * width
            y = np.array([row[k] for k in metrics], dtype=float) * 100
            err = np.array([[y[j] - row[f"{k}_low"] * 100, row[f"{k}_high"] * 100 - y[j]]
                            for j, k in enumerate(metrics)]).T
            ax.bar(x, y, width, yerr=err, capsize=2, label=name, color=colour[name])
        for j, k in enumerate(metrics):
            if k in goals.get(title, {}):
                ax.hlines(goals[title][k] * 100, j - 0.45, j + 0.45, colors="black", linestyles="--", lw=1.2)
        ax.set_xticks(range(len(metrics)), list(metrics))
        ax.set(title=title, ylim=(0, 105))
    axes[0].set_ylabel("% (mean over edits, 95% CI)")
    axes[-1].legend(handles=[Patch(color=c, label=n) for n, c in colour.items()], loc="upper left",
                    bbox_to_anchor=(1.01, 1), fontsize=8, title=f"dashed: {goal_label}", title_fontsize=8)
    fig.tight_layout()
    return fig


def point_ticks(ax, points) -> None:
    """Make `points` (the measured point counts) the only ticks of a log x axis."""
    from matplotlib.ticker import NullLocator

    ticks = sorted(set(points))
    ax.set_xticks(ticks, labels=[str(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
