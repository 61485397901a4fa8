"""Drawings of an attribution (matplotlib, no pyplot state): the heatmap of the strongest neurons beside
the by-layer profile, as a Figure or PNG bytes. The fact explorer shows them; chapters may too."""
from __future__ import annotations

import io
from typing import Iterable

import numpy as np
import torch

from .exploring import heatmap_frame, layer_profile, strongest_columns
from .neuron import Neuron


def attribution_figure(scores: torch.Tensor, *, n: int = 24, neurons: Iterable[Neuron] = (), title: str = ""):
    """A matplotlib Figure: the heatmap of scores [n_layers, width] over the strongest neuron columns
    (located `neurons` boxed), beside the by-layer profile (sum of positive scores)."""
    from matplotlib.figure import Figure

    neurons = list(neurons)
    cols = strongest_columns(scores, n, include=sorted({i for _, i in neurons}))
    frame, profile = heatmap_frame(scores, cols), layer_profile(scores)
    n_layers = scores.shape[0]
    fig = Figure(figsize=(min(4 + 0.28 * len(cols), 13), 1.6 + 0.22 * n_layers), dpi=90, layout="constrained")
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


def figure_png(fig) -> bytes:
    """PNG bytes of a matplotlib Figure (no pyplot state involved)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def specificity_figure(summaries: dict):
    """A Figure, a panel per {title: `kn.specificity.summarize` output}: the median change of P(gold)
    of the fact and of its other- and same-relation controls against the common-neuron filter's share,
    per scope (the raw sets as thin lines, within 5% of zero shaded)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * len(summaries), 3.6), layout="constrained")
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
    """A Figure: the heat map of knowledge neurons per fact [relation x layer] (`kn.layer_map.layer_map`),
    and beside it, per relation, the effects of zeroing each fact's set (`kn.layer_map.effects`: change
    of P(gold) for the fact, and for a fact of another relation)."""
    from matplotlib.figure import Figure

    n_rel, n_layers = per_fact.shape
    fig = Figure(figsize=(min(4 + 0.35 * n_layers, 14) + (3 if effects is not None else 0), 1.5 + 0.25 * n_rel),
                 dpi=90, layout="constrained")
    if effects is not None:
        heat, side = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1])
    else:
        heat, side = fig.subplots(1, 1), None
    im = heat.imshow(per_fact.to_numpy(dtype=float), aspect="auto", cmap="viridis", interpolation="nearest")
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
