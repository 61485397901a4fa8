"""The static explorer: recorded facts (`kn.recorded`) to pick from, drawn as ipywidgets that need no
kernel. A dropdown is linked in the browser (`jslink`) to a stack of one page per fact, so a saved
notebook or the built book (the widget state embedded, rendered offline by the HTML widget manager)
switches facts without Python. Each page: the layer x neuron heat map of where the fact's knowledge
neurons sit (shaded by the share of its paraphrases that found each), the neurons, and the recorded
effect of suppressing and amplifying them. CSS classes kn-recorded-* name the parts for browser tests.
"""
from __future__ import annotations

import html
import math
from typing import Sequence

from . import recorded
from .recorded import RecordedFact


def _percent(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:+.1%}"


def grid_html(fact: RecordedFact) -> str:
    """The fact's `kn.recorded.grid` as an HTML table: a shaded cell per neuron, its share as a tooltip."""
    frame = recorded.grid(fact)
    head = "".join(f"<th style='writing-mode:vertical-rl;font-weight:normal'>{html.escape(c)}</th>"
                   for c in frame.columns)
    rows = []
    for layer, values in frame.iterrows():
        cells = "".join(
            "<td style='border:1px solid #eee;width:18px'></td>" if math.isnan(v) else
            f"<td class='kn-recorded-cell' title='share {v:.2f}' "
            f"style='border:1px solid #eee;width:18px;background:rgba(198,40,40,{0.25 + 0.75 * v:.2f})'></td>"
            for v in values)
        rows.append(f"<tr><th style='font-weight:normal;padding-right:4px'>{layer}</th>{cells}</tr>")
    return (f"<table class='kn-recorded-grid' style='border-collapse:collapse;font-size:75%;line-height:1'>"
            f"<tr><th>layer</th>{head}</tr>{''.join(rows)}</table>")


def fact_html(fact: RecordedFact) -> str:
    """One page of the static explorer (see the module's docstring)."""
    e, n = fact.effect, fact.neurons
    listed = ", ".join(f"({l}, {i})" for l, i in zip(n["layer"], n["index"]))
    effect = (
        "<table class='kn-recorded-effect' style='border-collapse:collapse;font-size:90%'>"
        "<tr><th>P(answer) before</th><th>suppressed</th><th>amplified</th><th>change, suppressed</th>"
        "<th>change, amplified</th><th>another fact, suppressed</th></tr>"
        f"<tr><td>{e['p_before']:.4g}</td><td>{e['p_suppressed']:.4g}</td><td>{e['p_amplified']:.4g}</td>"
        f"<td>{_percent(e['suppression'])}</td><td>{_percent(e['amplification'])}</td>"
        f"<td>{_percent(e['control_other_suppression'])}</td></tr></table>")
    return (
        f"<div class='kn-recorded-fact' data-fact='{html.escape(f'{fact.model}/{fact.language}/{fact.fact_id}')}'>"
        f"<p><b>{html.escape(fact.label)}</b><br><small>{fact.n_prompts} paraphrases; recorded in "
        f"{html.escape(fact.source)}</small></p>"
        f"<p><b>Where its knowledge neurons sit</b> (layer x neuron, darker: found by more paraphrases)</p>"
        f"{grid_html(fact)}"
        f"<p class='kn-recorded-neurons'><b>{len(n)}</b> knowledge neuron(s) (layer, index): {html.escape(listed)}</p>"
        f"<p><b>Suppressing and amplifying them</b> (mean P(answer) over the paraphrases, relative change)</p>"
        f"{effect}</div>")


def recorded_explorer(facts: Sequence[RecordedFact]):
    """A dropdown of `facts` linked in the browser to a page per fact (no kernel needed to switch)."""
    from .widgets import _require_ipywidgets

    if not facts:
        raise ValueError("no recorded facts to explore: kn.recorded.facts found none in the directories given")
    w = _require_ipywidgets()
    pick = w.Dropdown(options=[(f.label, i) for i, f in enumerate(facts)], value=0, description="fact",
                      layout=w.Layout(width="640px"))
    pages = w.Stack([w.HTML(fact_html(f)) for f in facts], selected_index=0)
    w.jslink((pick, "index"), (pages, "selected_index"))
    pick.add_class("kn-recorded-pick")
    pages.add_class("kn-recorded-pages")
    box = w.VBox([pick, pages])
    box.add_class("kn-recorded")
    return box
