"""An interactive fact explorer (ipywidgets): probe, attribute, locate, suppress / amplify.

`explorer(lm_or_name)` returns a `FactExplorer`; show it in Jupyter (it displays its `.widget`). Its
buttons call kn's public API only: `kn.probe`, `kn.answer_prob` / `kn.answer_rank`, `kn.attribute`,
`kn.coarse` + `kn.refine` (what `kn.locate` does, per prompt so that progress can be shown and the
scores can be reused when threshold or share move) and `kn.suppress` / `kn.amplify`. The same steps
run without clicking: `.probe()`, `.attribute()`, `.locate()`, `.intervene("suppress")`. Errors are
shown in the widget, in red, and never raised. The methods are those of Dai et al. 2022 (sections
3.2 and 4.2); the book's chapters "Knowledge neurons" and "Exploring a fact" walk through them.

ipywidgets comes with the `book` extra (`pip install "kn[book]"` or `pip install ipywidgets`); it is
imported only when an explorer is built, so the pure helpers below work without it.
"""
from __future__ import annotations

import html
import io
import logging
import math
from contextlib import contextmanager
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from . import attribution, interventions, localization, models, probing, verification
from .interventions import AMPLIFY_FACTOR
from .models import DEFAULT_MODEL, LM, PACKAGED
from .neuron import Neuron

log = logging.getLogger(__name__)

MODES = ("none", "suppress", "amplify")
ERROR_COLOR = "#c62828"


# ---- pure helpers (no widgets) --------------------------------------------------------------------

def strongest_columns(scores: torch.Tensor, n: int = 24, include: Iterable[int] = ()) -> list[int]:
    """Neuron indices for the heatmap's columns: `include` first, then the largest column maxima of
    scores [n_layers, width], at most max(n, len(include)); ordered by the layer of each column's peak."""
    peak_value, peak_layer = scores.max(dim=0)  # [width] each
    include = [int(i) for i in include]
    ranked = peak_value.argsort(descending=True).tolist()
    chosen = list(dict.fromkeys(include + ranked))[: max(n, len(include))]
    return sorted(chosen, key=lambda i: (int(peak_layer[i]), i))


def heatmap_frame(scores: torch.Tensor, columns: Sequence[int]) -> pd.DataFrame:
    """scores[:, columns] as a DataFrame [n_layers, len(columns)]: rows are layers, columns neuron indices."""
    data = scores[:, list(columns)].float().cpu().numpy()
    return pd.DataFrame(data, index=pd.RangeIndex(scores.shape[0], name="layer"),
                        columns=pd.Index(list(columns), name="neuron"))


def layer_profile(scores: torch.Tensor) -> pd.DataFrame:
    """Per layer [n_layers]: the sum of the positive scores and the largest score."""
    s = scores.float().cpu()
    return pd.DataFrame({"positive sum": s.clamp(min=0).sum(dim=1).numpy(), "max": s.max(dim=1).values.numpy()},
                        index=pd.RangeIndex(s.shape[0], name="layer"))


def layer_groups(n_layers: int, groups: int) -> list[list[int]]:
    """Layers 0..n_layers-1 in `groups` consecutive, nearly equal groups (one progress step each)."""
    groups = max(1, min(int(groups), n_layers))
    return [list(map(int, g)) for g in np.array_split(np.arange(n_layers), groups)]


def paraphrase_table(prompts: Sequence[str], before: Sequence[float], after: Sequence[float]) -> pd.DataFrame:
    """One row per prompt [n_prompts]: P(answer) before, with the intervention, and the relative
    change (after - before) / before."""
    b, a = np.asarray(before, float), np.asarray(after, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(b > 0, (a - b) / b, np.nan)
    return pd.DataFrame({"prompt": list(prompts), "P before": b, "P after": a, "relative change": change})


def topk_frame(predictions: Sequence) -> pd.DataFrame:
    """`kn.probe` predictions as a table: rank (1 = top), token, probability."""
    return pd.DataFrame({"rank": range(1, len(predictions) + 1), "token": [p.token for p in predictions],
                         "P": [p.prob for p in predictions]})


def message(err: BaseException) -> str:
    """A one-line reading of an error for the widget (no traceback)."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    return text if isinstance(err, (ValueError, ImportError)) else f"{type(err).__name__}: {text}"


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


def _require_ipywidgets():
    try:
        import ipywidgets
    except ImportError:
        raise ImportError(
            "kn.widgets needs ipywidgets: pip install ipywidgets (or install kn with its book extra: "
            'pip install "kn[book]")'
        ) from None
    return ipywidgets


def _html_table(frame: pd.DataFrame, caption: str = "") -> str:
    body = frame.to_html(index=False, border=0, float_format=lambda x: f"{x:.4g}", na_rep="-", escape=True)
    cap = f"<div style='margin:2px 0'>{html.escape(caption)}</div>" if caption else ""
    return cap + body.replace("<table", "<table style='border-collapse:collapse;font-size:90%'", 1)


# ---- the explorer ---------------------------------------------------------------------------------

class FactExplorer:
    """One fact, explored: top-k answers, the attribution heatmap and by-layer profile, the knowledge
    neurons located from editable paraphrases, and P(answer) in every paraphrase under suppress / amplify.

    lm_or_name: an `LM`, a model name for `kn.load`, or None (the default packaged model); the
    dropdown offers it and every packaged model, each loaded on first use and kept.
    Results after each step: `predictions` (kn.probe), `scores` [n_layers, width], `neurons`
    [(layer, index), ...] (None before locating), `table` (DataFrame, see `paraphrase_table`) and
    `error` (the message shown, None when the last step succeeded).
    """

    def __init__(self, lm_or_name: LM | str | None = None, *, prompt: str = "", answer: str = "",
                 paraphrases: Sequence[str] | None = None, k: int = 10, steps: int = 20, threshold: float = 0.2,
                 share: float = 0.7, min_prompts: int = 3, factor: float = AMPLIFY_FACTOR, n_columns: int = 24,
                 groups: int = 1, loader: Callable[[str], LM] | None = None):
        w = _require_ipywidgets()
        self._loader = loader or models.load
        self._lms: dict[str, LM] = {}
        self._scores: dict[tuple, torch.Tensor] = {}  # (model, prompt, answer, steps) -> [n_layers, width]
        self.min_prompts, self.groups, self.n_columns = min_prompts, groups, n_columns
        self.predictions: list | None = None
        self.scores: torch.Tensor | None = None
        self.neurons: list[Neuron] | None = None
        self.table: pd.DataFrame | None = None
        self.error: str | None = None
        self._located_for: tuple | None = None  # (model, answer, steps, prompts) the neurons belong to
        self._scored_for: tuple | None = None  # (model, prompt, answer, steps) of `scores`

        if isinstance(lm_or_name, LM):
            self._lms[lm_or_name.name] = lm_or_name
            first = lm_or_name.name
        else:
            first = lm_or_name or DEFAULT_MODEL
        names = list(dict.fromkeys([first, *PACKAGED]))
        paraphrases = list(paraphrases) if paraphrases is not None else ([prompt] if prompt else [])

        self._make_controls(w, names, first, prompt, answer, paraphrases, k, steps, threshold, share, factor)
        self._wire()
        self.widget = self._layout(w)

    def _make_controls(self, w, names, first, prompt, answer, paraphrases, k, steps, threshold, share, factor):
        full = w.Layout(width="98%")
        self.model_select = w.Dropdown(options=names, value=first, description="model")
        self.k_input = w.BoundedIntText(value=k, min=1, max=100, description="top k", layout=w.Layout(width="150px"))
        self.prompt_text = w.Text(value=prompt, description="prompt", layout=full,
                                  placeholder="causal LM: ends where the answer begins; masked LM: holds [MASK]")
        self.answer_text = w.Text(value=answer, description="answer", layout=w.Layout(width="300px"))
        self.steps_input = w.BoundedIntText(value=steps, min=1, max=200, description="IG steps",
                                            layout=w.Layout(width="170px"))
        self.probe_button = w.Button(description="Probe", icon="search", tooltip="top-k answers (kn.probe)")
        self.attribute_button = w.Button(description="Attribute", icon="fire",
                                         tooltip="integrated gradients of the answer (kn.attribute)")
        self.paraphrases_text = w.Textarea(value="\n".join(paraphrases), description="paraphrases",
                                           placeholder="one prompt per line",
                                           layout=w.Layout(width="98%", height="96px"))
        self.threshold_slider = w.FloatSlider(value=threshold, min=0.0, max=1.0, step=0.05, description="threshold",
                                              continuous_update=False, readout_format=".2f")
        self.share_slider = w.FloatSlider(value=share, min=0.0, max=1.0, step=0.05, description="share",
                                          continuous_update=False, readout_format=".2f")
        self.locate_button = w.Button(description="Locate", icon="crosshairs",
                                      tooltip="knowledge neurons shared by the paraphrases (as kn.locate)")
        self.intervention = w.ToggleButtons(options=list(MODES), value="none", description="neurons",
                                            tooltips=["as they are", "set to 0", "multiply by the factor"])
        self.factor_input = w.BoundedFloatText(value=factor, min=0.0, max=100.0, step=0.5, description="factor",
                                               layout=w.Layout(width="160px"))
        self.status = w.HTML(value="")
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="240px", visibility="hidden"))
        self.progress_label = w.Label(value="")
        self.topk_html = w.HTML(value="<i>Probe to see the top answers.</i>")
        self.heatmap = w.Image(value=b"", format="png", layout=w.Layout(max_width="100%"))
        self.neurons_html = w.HTML(value="<i>Locate to find the knowledge neurons.</i>")
        self.table_html = w.HTML(value="")
        self._buttons = [self.probe_button, self.attribute_button, self.locate_button]

    def _wire(self) -> None:
        self.probe_button.on_click(lambda _: self.probe())
        self.attribute_button.on_click(lambda _: self.attribute())
        self.locate_button.on_click(lambda _: self.locate())
        self.model_select.observe(self._on_model, names="value")
        self.intervention.observe(lambda ch: self.intervene(ch["new"]), names="value")
        self.factor_input.observe(lambda _: self._refresh_if_amplified(), names="value")
        for slider in (self.threshold_slider, self.share_slider):
            slider.observe(lambda _: self._relocate_if_cached(), names="value")

    def _layout(self, w):
        h = lambda text: w.HTML(f"<b>{html.escape(text)}</b>")  # noqa: E731
        return w.VBox([
            w.HBox([self.model_select, self.k_input, self.steps_input]),
            self.prompt_text,
            w.HBox([self.answer_text, self.probe_button, self.attribute_button]),
            w.HBox([self.progress, self.progress_label]),
            self.status,
            h("Top answers"), self.topk_html,
            h("Attribution: layers x the strongest neurons, and the by-layer profile"), self.heatmap,
            h("Knowledge neurons from the paraphrases"), self.paraphrases_text,
            w.HBox([self.threshold_slider, self.share_slider, self.locate_button]),
            self.neurons_html,
            h("P(answer) in every paraphrase"), w.HBox([self.intervention, self.factor_input]),
            self.table_html,
        ])

    def __repr__(self) -> str:
        located = "not located" if self.neurons is None else f"{len(self.neurons)} neurons"
        return (f"FactExplorer(model={self.model_select.value!r}, prompt={self.prompt_text.value!r}, "
                f"answer={self.answer_text.value!r}, {located})")

    def _repr_mimebundle_(self, **kwargs):
        """Jupyter shows the widget; text/plain (no widget manager) is the repr."""
        return {**self.widget._repr_mimebundle_(**kwargs), "text/plain": repr(self)}

    # ---- the model ----
    @property
    def lm(self) -> LM:
        """The selected model, loaded on first use (raises what `kn.load` raises)."""
        name = self.model_select.value
        if name not in self._lms:
            self._info(f"loading {name} (a packaged model's first load dequantizes it: about a minute, once) ...")
            log.info("loading %s", name)
            self._lms[name] = self._loader(name)
        return self._lms[name]

    def _on_model(self, change):
        self.predictions = self.scores = self.neurons = self.table = None
        self._located_for = self._scored_for = None
        self.topk_html.value = "<i>Probe to see the top answers.</i>"
        self.heatmap.value = b""
        self.neurons_html.value = "<i>Locate to find the knowledge neurons.</i>"
        self.table_html.value = ""
        loaded = "loaded" if change["new"] in self._lms else "loads on first use"
        self._info(f"model {change['new']} ({loaded})")

    # ---- the steps ----
    def probe(self) -> list | None:
        """Top-k answers of the prompt, and P(answer) and its rank when an answer is given."""
        with self._step("probe"):
            lm, prompt = self.lm, self._prompt()
            self.predictions = probing.probe(lm, prompt, k=self.k_input.value)
            caption = f"{lm.name}: {'[MASK]' if lm.masked else 'next token'} after {prompt!r}"
            answer = self.answer_text.value.strip()
            if answer:
                p, rank = probing.answer_prob(lm, prompt, answer), probing.answer_rank(lm, prompt, answer)
                caption += f"; P({answer}) = {p:.4g}, its first token ranks {rank + 1}"
            self.topk_html.value = _html_table(topk_frame(self.predictions), caption)
            self._info(f"probed {lm.name}")
            return self.predictions
        return None

    def attribute(self) -> torch.Tensor | None:
        """IG scores [n_layers, width] of the answer after the prompt; draws the heatmap and profile."""
        with self._step("attribution"):
            lm, prompt, answer, steps = self.lm, self._prompt(), self.answer_text.value, self.steps_input.value
            self._start_progress(self._n_groups(lm), f"attributing {prompt!r} ({steps} steps)")
            self.scores = self._attribution(lm, prompt, answer, steps)
            self._scored_for = (lm.name, prompt, answer.strip(), steps)
            self._draw()
            self._info(f"attributed {answer.strip()!r} after {prompt!r} ({steps} steps)")
            return self.scores
        return None

    def locate(self) -> list[Neuron] | None:
        """Knowledge neurons of the answer from the paraphrases (coarse filter per prompt, then refine)."""
        with self._step("locate"):
            lm, answer, steps = self.lm, self.answer_text.value, self.steps_input.value
            prompts = self._paraphrases()
            todo = [p for p in prompts if self._key(lm, p, answer, steps) not in self._scores]
            self._start_progress(len(todo) * self._n_groups(lm),
                                 f"attributing {len(todo)} of {len(prompts)} paraphrases")
            for i, p in enumerate(todo, 1):
                self.progress_label.value = f"paraphrase {i}/{len(todo)}: {p!r}"
                self._attribution(lm, p, answer, steps)
            self._locate_from_cache(lm, prompts, answer, steps)
            return self.neurons
        return None

    def intervene(self, mode: str | None = None) -> pd.DataFrame | None:
        """P(answer) in every paraphrase before and with the located neurons suppressed / amplified."""
        if mode is not None and mode not in MODES:
            self._fail(f"intervention: the mode is one of {', '.join(MODES)}, not {mode!r}")
            return None
        if mode is not None and mode != self.intervention.value:
            self.intervention.value = mode  # its observer calls back here
            return self.table
        with self._step("intervention"):
            self._refresh_table()
            return self.table
        return None

    # ---- internals ----
    def _prompt(self) -> str:
        prompt = self.prompt_text.value
        if not prompt.strip():
            raise ValueError("type a prompt first")
        return prompt

    def _paraphrases(self) -> list[str]:
        prompts = [line.strip() for line in self.paraphrases_text.value.splitlines() if line.strip()]
        if len(prompts) < self.min_prompts:
            raise ValueError(f"{len(prompts)} paraphrase(s) given: a knowledge neuron must be found in at least "
                             f"{self.min_prompts} of them, so write at least {self.min_prompts}, one per line")
        return prompts

    @staticmethod
    def _key(lm: LM, prompt: str, answer: str, steps: int) -> tuple:
        return (lm.name, id(lm), prompt, answer.strip(), steps)

    def _attribution(self, lm: LM, prompt: str, answer: str, steps: int) -> torch.Tensor:
        key = self._key(lm, prompt, answer, steps)
        if key not in self._scores:
            total = torch.zeros(lm.n_layers, lm.width)
            for layers in layer_groups(lm.n_layers, self.groups):
                total += attribution.attribute(lm, prompt, answer, steps=steps, layers=layers).float().cpu()
                self.progress.value += 1
            self._scores[key] = total
        else:
            self.progress.value += self._n_groups(lm)
        return self._scores[key]

    def _n_groups(self, lm: LM) -> int:
        return len(layer_groups(lm.n_layers, self.groups))

    def _locate_from_cache(self, lm: LM, prompts: list[str], answer: str, steps: int) -> None:
        t, share = self.threshold_slider.value, self.share_slider.value
        sets = [localization.coarse(self._scores[self._key(lm, p, answer, steps)], t) for p in prompts]
        self.neurons = localization.refine(sets, share, self.min_prompts)
        self._located_for = (lm.name, answer.strip(), steps, tuple(prompts))
        listed = ", ".join(f"({l}, {i})" for l, i in self.neurons)
        found = [len(s) for s in sets]
        self.neurons_html.value = (f"<b>{len(self.neurons)}</b> knowledge neuron(s) (layer, index) at threshold "
                                   f"{t:.2f}, share {share:.2f}: {html.escape(listed) or '-'}<br>"
                                   f"<small>coarse set sizes per paraphrase: {found}</small>")
        if self.scores is not None:
            self._draw()
        self._refresh_table()
        if not self.neurons:
            self._fail(f"no knowledge neurons found at threshold {t:.2f} and share {share:.2f}: lower them, "
                       "or add paraphrases")
        else:
            self._info(f"located {len(self.neurons)} knowledge neuron(s) from {len(prompts)} paraphrases")

    def _relocate_if_cached(self) -> None:
        if self._located_for is None:
            return
        with self._step("locate"):
            lm, answer, steps = self.lm, self.answer_text.value, self.steps_input.value
            prompts = self._paraphrases()
            if (lm.name, answer.strip(), steps, tuple(prompts)) == self._located_for:  # scores at hand: instant
                self._locate_from_cache(lm, prompts, answer, steps)
            else:
                self._info("threshold / share changed: click Locate to attribute the edited fact")

    def _refresh_if_amplified(self) -> None:
        if self.intervention.value == "amplify":
            self.intervene()

    def _refresh_table(self) -> None:
        if self.neurons is None:
            self.table = None
            self.table_html.value = "<i>Locate the knowledge neurons first.</i>"
            return
        lm, mode = self.lm, self.intervention.value
        _, answer, _, prompts = self._located_for  # the fact the neurons were located for
        prompts = list(prompts)
        before = [probing.answer_prob(lm, p, answer) for p in prompts]
        if mode == "none" or not self.neurons:
            after = before
        else:
            factor = self.factor_input.value
            ctx = (interventions.suppress(lm, self.neurons) if mode == "suppress"
                   else interventions.amplify(lm, self.neurons, factor))
            with ctx:
                after = [probing.answer_prob(lm, p, answer) for p in prompts]
        self.table = paraphrase_table(prompts, before, after)
        what = {"none": "no intervention", "suppress": f"{len(self.neurons)} neuron(s) set to 0",
                "amplify": f"{len(self.neurons)} neuron(s) multiplied by {self.factor_input.value:g}"}[mode]
        change = verification.ratio_of_means(before, after)
        self.table_html.value = _html_table(
            self.table, f"P({answer.strip()}): {what}; relative change of the mean: "
                        f"{'-' if math.isnan(change) else f'{change:+.1%}'}")

    def _draw(self) -> None:
        name, prompt, answer, steps = self._scored_for
        same_fact = self._located_for is not None and self._located_for[:3] == (name, answer, steps)
        fig = attribution_figure(self.scores, n=self.n_columns, neurons=self.neurons if same_fact else (),
                                 title=f"{name}: {prompt} -> {answer}  ({steps} steps)")
        self.heatmap.value = figure_png(fig)

    def _start_progress(self, total: int, label: str) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = 0
        self.progress.layout.visibility = "visible"
        self.progress_label.value = label

    def _info(self, text: str) -> None:
        self.status.value = f"<span style='color:#555'>{html.escape(text)}</span>"

    def _fail(self, text: str) -> None:
        self.error = text
        self.status.value = f"<span style='color:{ERROR_COLOR}'><b>error:</b> {html.escape(text)}</span>"

    @contextmanager
    def _step(self, what: str):
        """Run one step with the buttons disabled; an exception becomes a red message, not a traceback."""
        for b in self._buttons:
            b.disabled = True
        self.error = None
        try:
            yield
        except Exception as err:  # noqa: BLE001 -- a widget shows errors, it does not raise them
            log.debug("%s failed", what, exc_info=True)
            self._fail(f"{what}: {message(err)}")
        finally:
            for b in self._buttons:
                b.disabled = False
            self.progress.layout.visibility = "hidden"
            self.progress_label.value = ""


def explorer(lm_or_name: LM | str | None = None, **kwargs) -> FactExplorer:
    """A `FactExplorer` on an `LM` or a model name (None: the default packaged model, loaded on first use).

    kwargs: prompt, answer, paraphrases (list of prompts), k, steps, threshold, share, min_prompts,
    factor (amplify), n_columns (heatmap columns), groups (each attribution runs in this many layer
    groups, one progress step each; 1 = per prompt, the fastest: each extra group costs ~10-25%),
    loader (name -> LM, default `kn.load`).
    """
    return FactExplorer(lm_or_name, **kwargs)
