"""An interactive fact explorer (ipywidgets): probe, attribute, locate, suppress / amplify.

`explorer(lm_or_name)` returns a `FactExplorer`; show it in Jupyter (it displays its `.widget`). This
module only draws: what each button computes is `kn.exploring` (plain functions, tested without a
browser) and the heatmap is `kn.figures`. The same steps run without clicking: `.probe()`,
`.attribute()`, `.locate()`, `.intervene("suppress")`. A bad value (an empty prompt, top k 0, IG steps
10^6, a threshold above 1, an answer the tokenizer cannot form) is said in the widget, in red, and
never raised nor clamped; the next good step clears it. The methods are those of Dai et al. 2022
(sections 3.2 and 4.2); the book's chapters "Knowledge neurons" and "Exploring a fact" walk through them.
The method dropdown scores neurons by IG (the paper's, with the IG steps) or by any other registered kind
(`kn.settings.KINDS`: activation, gradxact, logprob).

ipywidgets comes with the `book` extra (`pip install "kn[book]"` or `pip install ipywidgets`); it is
imported only when an explorer is built.
"""
from __future__ import annotations

import html
import logging
import math
from contextlib import contextmanager
from typing import Callable, Sequence

import pandas as pd
import torch

from . import exploring, figures, models
from .exploring import MODES, describe, how
from .interventions import AMPLIFY_FACTOR
from .models import DEFAULT_MODEL, LM, PACKAGED
from .neuron import Neuron

log = logging.getLogger(__name__)

ERROR_COLOR = "#c62828"
NO_TOPK = "<i>Probe to see the top answers.</i>"
NO_NEURONS = "<i>Locate to find the knowledge neurons.</i>"


def _require_ipywidgets():
    try:
        import ipywidgets
    except ImportError:
        raise ImportError(
            "kn.widgets needs ipywidgets: pip install ipywidgets (or install kn with its book extra: "
            'pip install "kn[book]")'
        ) from None
    return ipywidgets


# ---- what the outputs show (HTML strings) --------------------------------------------------------

def html_table(frame: pd.DataFrame, caption: str = "") -> str:
    body = frame.to_html(index=False, border=0, float_format=lambda x: f"{x:.4g}", na_rep="-", escape=True)
    cap = f"<div style='margin:2px 0'>{html.escape(caption)}</div>" if caption else ""
    return cap + body.replace("<table", "<table style='border-collapse:collapse;font-size:90%'", 1)


def topk_html(lm: LM, prompt: str, answer: str, probed: exploring.Probed) -> str:
    caption = f"{lm.name}: {'[MASK]' if lm.masked else 'next token'} after {prompt!r}"
    if probed.answer_prob is not None:
        caption += f"; P({answer.strip()}) = {probed.answer_prob:.4g}, its first token ranks {probed.answer_rank + 1}"
    return html_table(exploring.topk_frame(probed.predictions), caption)


def neurons_html(located: exploring.Located, threshold: float, share: float) -> str:
    listed = ", ".join(f"({l}, {i})" for l, i in located.neurons)
    return (f"<b>{len(located.neurons)}</b> knowledge neuron(s) (layer, index) at threshold {threshold:.2f}, "
            f"share {share:.2f}: {html.escape(listed) or '-'}<br>"
            f"<small>coarse set sizes per paraphrase: {located.set_sizes}</small>")


def intervention_html(table: pd.DataFrame, answer: str, mode: str, n_neurons: int, factor: float) -> str:
    what = {"none": "no intervention", "suppress": f"{n_neurons} neuron(s) set to 0",
            "amplify": f"{n_neurons} neuron(s) multiplied by {factor:g}"}[mode]
    change = exploring.mean_change(table)
    return html_table(table, f"P({answer.strip()}): {what}; relative change of the mean: "
                             f"{'-' if math.isnan(change) else f'{change:+.1%}'}")


# ---- the view -------------------------------------------------------------------------------------

def _make(name: str, cls, **kw):
    """A widget with the CSS class `kn-<name>` (kn-prompt, kn-probe, kn-heatmap, ...): how a browser finds it."""
    widget = cls(**kw)
    widget.add_class(f"kn-{name}")
    return widget


class Inputs:
    """What a reader sets: the model, the fact, the settings, and the buttons."""

    def __init__(self, w, names, first, prompt, answer, paraphrases, k, steps, threshold, share, factor,
                 method="ig"):
        small = lambda px: w.Layout(width=f"{px}px")  # noqa: E731
        self.model = _make("model", w.Dropdown, options=names, value=first, description="model")
        self.k = _make("k", w.IntText, value=k, description="top k", layout=small(150))
        self.steps = _make("steps", w.IntText, value=steps, description="IG steps", layout=small(170))
        self.method = _make("method", w.Dropdown, options=exploring.methods(), value=exploring.check_method(method),
                            description="method", layout=small(210),
                            tooltip="how neurons are scored: ig (integrated gradients, IG steps), activation, "
                                    "gradxact (gradient x activation), logprob (log-probability increase)")
        self.prompt = _make("prompt", w.Text, value=prompt, description="prompt", layout=w.Layout(width="98%"),
                            placeholder="causal LM: ends where the answer begins; masked LM: holds [MASK]")
        self.answer = _make("answer", w.Text, value=answer, description="answer", layout=small(300))
        self.probe = _make("probe", w.Button, description="Probe", icon="search", tooltip="top-k answers (kn.probe)")
        self.attribute = _make("attribute", w.Button, description="Attribute", icon="fire",
                               tooltip="the answer's neuron scores by the method chosen (kn.scores)")
        self.paraphrases = _make("paraphrases", w.Textarea, value="\n".join(paraphrases), description="paraphrases",
                                 placeholder="one prompt per line", layout=w.Layout(width="98%", height="96px"))
        self.threshold = _make("threshold", w.FloatText, value=threshold, step=0.05, description="threshold",
                               layout=small(180))
        self.share = _make("share", w.FloatText, value=share, step=0.05, description="share", layout=small(180))
        self.locate = _make("locate", w.Button, description="Locate", icon="crosshairs",
                            tooltip="knowledge neurons shared by the paraphrases (as kn.locate)")
        self.intervention = _make("intervention", w.ToggleButtons, options=list(MODES), value="none",
                                  description="neurons", tooltips=["as they are", "set to 0", "multiply by the factor"])
        self.factor = _make("factor", w.FloatText, value=factor, step=0.5, description="factor", layout=small(160))
        self.buttons = [self.probe, self.attribute, self.locate]


class Outputs:
    """What the steps show: a status line, a progress bar, the top answers, the heatmap, the neurons, the table."""

    def __init__(self, w):
        self.error: str | None = None  # the message shown, None when the last step succeeded
        self.status = _make("status", w.HTML, value="")
        self.progress = _make("progress", w.IntProgress, value=0, min=0, max=1,
                              layout=w.Layout(width="240px", visibility="hidden"))
        self.progress_label = _make("progress-label", w.Label, value="")
        self.topk = _make("topk", w.HTML, value=NO_TOPK)
        self.heatmap = _make("heatmap", w.Image, value=b"", format="png", layout=w.Layout(max_width="100%"))
        self.neurons = _make("neurons", w.HTML, value=NO_NEURONS)
        self.table = _make("table", w.HTML, value="")

    def clear(self) -> None:
        self.topk.value, self.heatmap.value, self.neurons.value, self.table.value = NO_TOPK, b"", NO_NEURONS, ""

    def info(self, text: str) -> None:
        self.status.value = f"<span style='color:#555'>{html.escape(text)}</span>"

    def fail(self, text: str) -> None:
        self.error = text
        self.status.value = f"<span style='color:{ERROR_COLOR}'><b>error:</b> {html.escape(text)}</span>"

    def start_progress(self, total: int, label: str, items: Sequence[str] = (), per_item: int = 1) -> Callable[[], None]:
        """Shows the progress bar at 0 of `total`; returns the tick that advances it by one (with `items`,
        the label names the item being worked on, each taking `per_item` ticks)."""
        self.progress.max, self.progress.value = max(total, 1), 0
        self.progress.layout.visibility = "visible"

        def name_item():
            done = self.progress.value // per_item
            if done < len(items):
                self.progress_label.value = f"{done + 1}/{len(items)}: {items[done]!r}"

        def tick():
            self.progress.value += 1
            name_item()
        self.progress_label.value = label
        name_item()
        return tick

    @contextmanager
    def busy(self, buttons):
        """The buttons disabled while a step runs; the progress bar hidden after it."""
        for b in buttons:
            b.disabled = True
        try:
            yield
        finally:
            for b in buttons:
                b.disabled = False
            self.progress.layout.visibility = "hidden"
            self.progress_label.value = ""

    @contextmanager
    def step(self, what: str, buttons):
        """One step, busy (the status says so): an exception becomes a red message naming the step, not a traceback."""
        self.error = None
        self.info(f"{what} ...")
        with self.busy(buttons):
            try:
                yield
            except Exception as err:  # noqa: BLE001 -- a widget shows errors, it does not raise them
                log.debug("%s failed", what, exc_info=True)
                self.fail(f"{what}: {exploring.message(err)}")

    def show_table(self, results: exploring.Exploration, lm: LM, mode: str, factor: float) -> None:
        """P(answer) in every paraphrase under the intervention (`results.intervene`), or a hint to locate first."""
        table = results.intervene(lm, mode, factor)
        self.table.value = ("<i>Locate the knowledge neurons first.</i>" if table is None else
                            intervention_html(table, results.located_for[1], mode, len(results.neurons), factor))

    def draw(self, results: exploring.Exploration, n_columns: int) -> None:
        name, prompt, answer, steps = results.scored_for
        fig = figures.attribution_figure(results.scores, n=n_columns, neurons=results.boxed(),
                                         title=f"{name}: {prompt} -> {answer}  ({steps} steps)")
        self.heatmap.value = figures.figure_png(fig)


def layout(w, i: Inputs, o: Outputs):
    """The explorer's box (CSS class kn-explorer): inputs above the outputs they lead to."""
    h = lambda text: w.HTML(f"<b>{html.escape(text)}</b>")  # noqa: E731
    box = w.VBox([
        w.HBox([i.model, i.k, i.method, i.steps]), i.prompt, w.HBox([i.answer, i.probe, i.attribute]),
        w.HBox([o.progress, o.progress_label]), o.status,
        h("Top answers"), o.topk,
        h("Attribution: layers x the strongest neurons, and the by-layer profile"), o.heatmap,
        h("Knowledge neurons from the paraphrases"), i.paraphrases, w.HBox([i.threshold, i.share, i.locate]),
        o.neurons,
        h("P(answer) in every paraphrase"), w.HBox([i.intervention, i.factor]), o.table,
    ])
    box.add_class("kn-explorer")
    return box


class Models:
    """The models the dropdown offers, each loaded on first use (by `loader`, default kn.load) and kept."""

    def __init__(self, lm_or_name: LM | str | None, loader: Callable[[str], LM] | None):
        self.loader, self.loaded = loader or models.load, {}
        if isinstance(lm_or_name, LM):
            self.loaded[lm_or_name.name] = lm_or_name
        self.first = lm_or_name.name if isinstance(lm_or_name, LM) else (lm_or_name or DEFAULT_MODEL)
        self.names = list(dict.fromkeys([self.first, *PACKAGED]))

    def get(self, name: str, say: Callable[[str], None]) -> LM:
        if name not in self.loaded:
            say(f"loading {name} (a packaged model's first load dequantizes it: about a minute, once) ...")
            log.info("loading %s", name)
            self.loaded[name] = self.loader(name)
        return self.loaded[name]


class FactExplorer:
    """One fact, explored: top-k answers, the attribution heatmap and by-layer profile, the knowledge
    neurons located from editable paraphrases, and P(answer) in every paraphrase under suppress / amplify.

    lm_or_name: an `LM`, a model name for `kn.load`, or None (the default packaged model); the
    dropdown offers it and every packaged model, each loaded on first use and kept. `ui` holds the
    input widgets (`Inputs`), `out` the output ones (`Outputs`); `results` (a `kn.exploring.Exploration`)
    the latest `predictions`, `scores` [n_layers, width], `neurons` [(layer, index), ...] (None before
    locating) and `table`; `error` is the message shown, None when the last step succeeded.
    """

    def __init__(self, lm_or_name: LM | str | None = None, *, prompt: str = "", answer: str = "",
                 paraphrases: Sequence[str] | None = None, k: int = 10, steps: int = 20, method: str = "ig",
                 threshold: float = 0.2,
                 share: float = 0.7, min_prompts: int = 3, factor: float = AMPLIFY_FACTOR, n_columns: int = 24,
                 groups: int = 1, loader: Callable[[str], LM] | None = None):
        w = _require_ipywidgets()
        self.models, self.results = Models(lm_or_name, loader), exploring.Exploration(min_prompts, groups)
        self.n_columns = n_columns
        paraphrases = list(paraphrases) if paraphrases is not None else ([prompt] if prompt else [])
        self.ui = ui = Inputs(w, self.models.names, self.models.first, prompt, answer, paraphrases, k, steps,
                              threshold, share, factor, method)
        self.out = Outputs(w)
        self.widget = layout(w, ui, self.out)
        _wire(self)

    @property
    def error(self) -> str | None:
        """The message the widget shows, None when the last step succeeded."""
        return self.out.error

    def __repr__(self) -> str:
        n = self.results.neurons
        return (f"FactExplorer(model={self.ui.model.value!r}, prompt={self.ui.prompt.value!r}, "
                f"answer={self.ui.answer.value!r}, {'not located' if n is None else f'{len(n)} neurons'})")

    def _repr_mimebundle_(self, **kwargs):
        """Jupyter shows the widget; text/plain (no widget manager) is the repr."""
        return {**self.widget._repr_mimebundle_(**kwargs), "text/plain": repr(self)}

    @property
    def lm(self) -> LM:
        """The selected model, loaded on first use (raises what `kn.load` raises)."""
        return self.models.get(self.ui.model.value, self.out.info)

    def on_model(self, change) -> None:
        """Another model chosen: the results shown are forgotten (the kept scores stay, by model)."""
        self.results.reset()
        self.out.clear()
        self.out.info(f"model {change['new']} ({'loaded' if change['new'] in self.models.loaded else 'loads on first use'})")

    # ---- the steps: each shows its outcome or its error, never raises; returns its result or None ----
    def probe(self) -> list | None:
        """Top-k answers of the prompt, and P(answer) and its rank when an answer is given."""
        with self.out.step("probe", self.ui.buttons):
            ui, lm = self.ui, self.lm
            probed = self.results.probe(lm, ui.prompt.value, ui.answer.value, ui.k.value)
            self.out.topk.value = topk_html(lm, ui.prompt.value, ui.answer.value, probed)
            self.out.info(f"probed {lm.name}")
        return self.results.predictions if self.error is None else None

    def attribute(self) -> torch.Tensor | None:
        """Scores [n_layers, width] of the answer after the prompt (IG, or the method chosen); draws the heatmap
        and profile."""
        with self.out.step("attribution", self.ui.buttons):
            ui, lm, prompt, answer = self.ui, self.lm, self.ui.prompt.value, self.ui.answer.value
            what = describe(how(ui.steps.value, ui.method.value))
            n = self.results.n_groups(lm)
            tick = self.out.start_progress(n, f"attributing ({what})", [prompt], n)
            self.results.attribute(lm, prompt, answer, ui.steps.value, tick, ui.method.value)
            self.out.draw(self.results, self.n_columns)
            self.out.info(f"attributed {answer.strip()!r} after {prompt!r} ({what})")
        return self.results.scores if self.error is None else None

    def locate(self, only_if_kept: bool = False) -> list[Neuron] | None:
        """Knowledge neurons of the answer from the paraphrases (coarse filter per prompt, then refine).
        only_if_kept: re-locate from the kept scores (a new threshold or share), or say to click Locate."""
        if only_if_kept and self.results.located_for is None:
            return None
        with self.out.step("locate", self.ui.buttons):
            ui, out, lm, r = self.ui, self.out, self.lm, self.results
            args = (lm, ui.paraphrases.value, ui.answer.value, ui.steps.value)
            todo = r.to_attribute(*args, ui.threshold.value, ui.share.value, ui.method.value)
            if only_if_kept and (todo or not r.same_fact(*args, ui.method.value)):
                out.info("threshold / share changed: click Locate to attribute the edited fact")
                return r.neurons
            tick = out.start_progress(len(todo) * r.n_groups(lm), "attributing the paraphrases", todo, r.n_groups(lm))
            located = r.locate(*args, ui.threshold.value, ui.share.value, tick, ui.method.value)
            out.neurons.value = neurons_html(located, ui.threshold.value, ui.share.value)
            if r.scores is not None:
                out.draw(r, self.n_columns)
            out.show_table(r, lm, ui.intervention.value, ui.factor.value)
            if not located.neurons:
                raise ValueError(f"no knowledge neurons found at threshold {ui.threshold.value:.2f} and share "
                                 f"{ui.share.value:.2f}: lower them, or add paraphrases")
            out.info(f"located {len(located.neurons)} knowledge neuron(s) from {len(located.set_sizes)} paraphrases")
        return self.results.neurons if self.error is None else None

    def intervene(self, mode: str | None = None) -> pd.DataFrame | None:
        """P(answer) in every paraphrase before and with the located neurons suppressed / amplified."""
        if mode in MODES and mode != self.ui.intervention.value:
            self.ui.intervention.value = mode  # its observer calls back here
            return self.results.table
        with self.out.step("intervention", self.ui.buttons):
            self.out.show_table(self.results, self.lm, mode or self.ui.intervention.value, self.ui.factor.value)
        return self.results.table if self.error is None else None



def _wire(ex: FactExplorer) -> None:
    """The buttons run the steps; a new threshold or share re-locates from the kept scores."""
    ui = ex.ui
    ui.probe.on_click(lambda _: ex.probe())
    ui.attribute.on_click(lambda _: ex.attribute())
    ui.locate.on_click(lambda _: ex.locate())
    ui.model.observe(ex.on_model, names="value")
    ui.intervention.observe(lambda ch: ex.intervene(ch["new"]), names="value")
    ui.factor.observe(lambda _: ui.intervention.value == "amplify" and ex.intervene(), names="value")
    for box in (ui.threshold, ui.share):
        box.observe(lambda _: ex.locate(only_if_kept=True), names="value")


def explorer(lm_or_name: LM | str | None = None, **kwargs) -> FactExplorer:
    """A `FactExplorer` on an `LM` or a model name (None: the default packaged model, loaded on first use).

    kwargs: prompt, answer, paraphrases (list of prompts), k, steps (IG), method (a kind of `kn.settings.KINDS`:
    "ig", the default, "activation", "gradxact", "logprob"), threshold, share, min_prompts,
    factor (amplify), n_columns (heatmap columns), groups (each attribution runs in this many layer
    groups, one progress step each; 1 = per prompt, the fastest: each extra group costs ~10-25%),
    loader (name -> LM, default `kn.load`). Values out of the controls' ranges are shown as a message
    when a step uses them, not clamped.
    """
    return FactExplorer(lm_or_name, **kwargs)
