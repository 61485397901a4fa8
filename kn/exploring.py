"""What the fact explorer computes, as plain functions: no widgets, no drawing (`kn.widgets` draws).

Each control of the explorer is checked here (`check_k`, `check_steps`, `check_method`, `check_fraction`,
`check_factor`, `check_prompt`, `check_paraphrases`): a value out of range raises `kn.checks.ArgumentError`
naming the control and saying what it takes, instead of being clamped. The steps are kn's public
functions, grouped as the explorer shows them: `probe_fact` (kn.probe with the answer's probability
and rank), `attribute_in_groups` (kn.scores in layer groups, one progress tick each; IG with its steps or any
registered method, `how`),
`ScoreCache` (attributions kept by fact, so a new threshold or share re-locates at once),
`locate_from_scores` (kn.coarse + kn.refine, what kn.locate does) and `intervention_table`
(P(answer) in every paraphrase before and with the neurons suppressed / amplified).
"""
from __future__ import annotations

from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from . import attribution, checks, interventions, localization, probing, verification
from . import settings as attribution_settings
from .models import LM
from .neuron import Neuron

MODES = ("none", "suppress", "amplify")
MAX_K = 100       # answers listed by Probe; kn.probe itself takes up to the vocabulary's size
MAX_STEPS = 200   # IG path points per attribution; kn.attribute itself takes any number


# ---- the controls, checked (said, never clamped) --------------------------------------------------

def check_k(k) -> int:
    k = checks.integer(k, "top k")
    if not 1 <= k <= MAX_K:
        raise checks.ArgumentError(f"top k is {k}: the explorer lists 1 to {MAX_K} answers; set top k in that range "
                                   f"(kn.probe(lm, prompt, k={k}) lists more)")
    return k


def check_steps(steps) -> int:
    steps = checks.integer(steps, "IG steps")
    if not 1 <= steps <= MAX_STEPS:
        raise checks.ArgumentError(
            f"IG steps is {steps}: the explorer takes 1 to {MAX_STEPS} path points (each is a forward and backward "
            f"pass); set IG steps in that range (kn.attribute(..., steps={steps}) runs more)")
    return steps


def methods() -> list[str]:
    """The attribution methods the explorer offers: every registered kind (`kn.settings.KINDS`)."""
    return list(attribution_settings.KINDS)


def check_method(method) -> str:
    if method not in attribution_settings.KINDS:
        raise checks.ArgumentError(f"method is {method!r}: choose one of {', '.join(methods())}")
    return method


def how(steps, method: str = "ig"):
    """The attribution settings of the controls: `kn.IG(steps=steps)`, or another method's settings (IG steps
    unused then, not checked)."""
    method = check_method(method)
    return attribution_settings.IG(steps=check_steps(steps)) if method == "ig" else \
        attribution_settings.resolve(method=method)


def describe(settings) -> str:
    """"20 steps" for IG, the method's kind otherwise: what a status line says was run."""
    return f"{settings.steps} steps" if settings.kind == "ig" else f"method {settings.kind}"


def check_fraction(value, name: str) -> float:
    value = checks.number(value, name)
    if not 0.0 <= value <= 1.0:
        raise checks.ArgumentError(f"{name} is {value:g}: it is a fraction; set it between 0 and 1")
    return value


def check_factor(factor) -> float:
    factor = checks.number(factor, "factor")
    if factor < 0:
        raise checks.ArgumentError(f"factor is {factor:g}: amplify multiplies activations by it; set it to 0 or more")
    return factor


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise checks.ArgumentError(f"the intervention is {mode!r}: choose one of {', '.join(MODES)}")
    return mode


def check_prompt(prompt: str) -> str:
    if not prompt.strip():
        raise checks.ArgumentError("the prompt is empty: type a prompt first")
    return prompt


def check_paraphrases(text: str, min_prompts: int) -> list[str]:
    """The paraphrases box's prompts, one a line (blank lines skipped); at least `min_prompts`."""
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if len(prompts) < min_prompts:
        raise checks.ArgumentError(
            f"{len(prompts)} paraphrase(s) given: a knowledge neuron must be found in at least {min_prompts} of "
            f"them, so write at least {min_prompts}, one per line")
    return prompts


# ---- the steps ------------------------------------------------------------------------------------

class Probed(NamedTuple):
    predictions: list          # kn.probe's [Prediction(token, prob, id)], best first
    answer_prob: float | None  # P(answer | prompt), None without an answer
    answer_rank: int | None    # rank of the answer's first token, 0 = top-1


def probe_fact(lm: LM, prompt: str, answer: str, k: int) -> Probed:
    """Top-k answers of the prompt, and P(answer) and its rank when an answer is given."""
    predictions = probing.probe(lm, check_prompt(prompt), k=check_k(k))
    if not answer.strip():
        return Probed(predictions, None, None)
    return Probed(predictions, probing.answer_prob(lm, prompt, answer), probing.answer_rank(lm, prompt, answer))


def layer_groups(n_layers: int, groups: int) -> list[list[int]]:
    """Layers 0..n_layers-1 in `groups` consecutive, nearly equal groups (one progress step each)."""
    groups = max(1, min(int(groups), n_layers))
    return [list(map(int, g)) for g in np.array_split(np.arange(n_layers), groups)]


def attribute_in_groups(lm: LM, prompt: str, answer: str, steps: int, groups: int = 1,
                        tick: Callable[[], None] = lambda: None, method: str = "ig") -> torch.Tensor:
    """kn.scores [n_layers, width] (float32, CPU) of IG with `steps` (or of `method`, `how`), computed `groups`
    layer groups at a time, calling `tick()` after each (the same scores; each extra group costs ~10-25%)."""
    prompt, settings = check_prompt(prompt), how(steps, method)
    total = torch.zeros(lm.n_layers, lm.width)
    for layers in layer_groups(lm.n_layers, groups):
        total += attribution.scores(lm, prompt, answer, settings, layers=layers).float().cpu()
        tick()
    return total


class ScoreCache:
    """Attribution scores kept by (model, prompt, answer, steps, method): each fact is attributed once per
    setting (IG steps count for IG only)."""

    def __init__(self):
        self._scores: dict[tuple, torch.Tensor] = {}

    @staticmethod
    def key(lm: LM, prompt: str, answer: str, steps: int, method: str = "ig") -> tuple:
        return lm.name, id(lm), prompt, answer.strip(), how(steps, method)

    def has(self, lm: LM, prompt: str, answer: str, steps: int, method: str = "ig") -> bool:
        return self.key(lm, prompt, answer, steps, method) in self._scores

    def get(self, lm: LM, prompt: str, answer: str, steps: int, groups: int = 1,
            tick: Callable[[], None] = lambda: None, method: str = "ig") -> torch.Tensor:
        """The scores, attributed on first use (`attribute_in_groups`); ticks once per group either way."""
        key = self.key(lm, prompt, answer, steps, method)
        if key not in self._scores:
            self._scores[key] = attribute_in_groups(lm, prompt, answer, steps, groups, tick, method)
        else:
            for _ in layer_groups(lm.n_layers, groups):
                tick()
        return self._scores[key]


class Located(NamedTuple):
    neurons: list[Neuron]   # shared by enough paraphrases, sorted
    set_sizes: list[int]    # the coarse set's size per paraphrase


def locate_from_scores(scores: Sequence[torch.Tensor], threshold: float, share: float,
                       min_prompts: int = 3) -> Located:
    """kn.locate's two filters on given scores: coarse (threshold x each prompt's maximum), then refine
    (in at least max(share x n, min_prompts) prompts)."""
    threshold, share = check_fraction(threshold, "threshold"), check_fraction(share, "share")
    sets = [localization.coarse(s, threshold) for s in scores]
    return Located(localization.refine(sets, share, min_prompts), [len(s) for s in sets])


def intervention_table(lm: LM, prompts: Sequence[str], answer: str, neurons: Iterable[Neuron], mode: str,
                       factor: float = interventions.AMPLIFY_FACTOR) -> pd.DataFrame:
    """P(answer) in every prompt before and with the neurons set to 0 ("suppress") or multiplied by
    `factor` ("amplify"); "none" (or no neurons) leaves them as they are (see `paraphrase_table`)."""
    mode, neurons = check_mode(mode), list(neurons)
    before = [probing.answer_prob(lm, p, answer) for p in prompts]
    if mode == "none" or not neurons:
        return paraphrase_table(prompts, before, before)
    ctx = (interventions.suppress(lm, neurons) if mode == "suppress"
           else interventions.amplify(lm, neurons, check_factor(factor)))
    with ctx:
        after = [probing.answer_prob(lm, p, answer) for p in prompts]
    return paraphrase_table(prompts, before, after)


def mean_change(table: pd.DataFrame) -> float:
    """The paper's relative change of the mean P(answer) over an `intervention_table` (NaN if P was 0)."""
    return verification.ratio_of_means(table["P before"], table["P after"])


class Exploration:
    """The explorer's state for one model, without widgets: the scores it keeps and the results of the
    latest steps, `predictions` (kn.probe), `scores` [n_layers, width], `neurons` (None before locating)
    and `table` (`intervention_table`), each with what it was computed for."""

    def __init__(self, min_prompts: int = 3, groups: int = 1):
        self.cache, self.min_prompts, self.groups = ScoreCache(), min_prompts, groups
        self.reset()

    def reset(self) -> None:
        """Forget the results (another model): the kept scores stay, keyed by model."""
        self.predictions = self.scores = self.neurons = self.table = None
        self.scored_for: tuple | None = None   # (model, prompt, answer, settings) of `scores`
        self.located_for: tuple | None = None  # (model, answer, settings, prompts) of `neurons`

    def n_groups(self, lm: LM) -> int:
        return len(layer_groups(lm.n_layers, self.groups))

    def probe(self, lm: LM, prompt: str, answer: str, k: int) -> Probed:
        probed = probe_fact(lm, prompt, answer, k)
        self.predictions = probed.predictions
        return probed

    def attribute(self, lm: LM, prompt: str, answer: str, steps: int, tick=lambda: None,
                  method: str = "ig") -> torch.Tensor:
        prompt, settings = check_prompt(prompt), how(steps, method)
        self.scores = self.cache.get(lm, prompt, answer, steps, self.groups, tick, method)
        self.scored_for = (lm.name, prompt, answer.strip(), settings)
        return self.scores

    def to_attribute(self, lm: LM, paraphrases: str, answer: str, steps: int, threshold, share,
                     method: str = "ig") -> list[str]:
        """The paraphrases (one a line) not attributed yet, after checking every setting of Locate."""
        how(steps, method)
        prompts = check_paraphrases(paraphrases, self.min_prompts)
        check_fraction(threshold, "threshold"), check_fraction(share, "share")
        return [p for p in prompts if not self.cache.has(lm, p, answer, steps, method)]

    def locate(self, lm: LM, paraphrases: str, answer: str, steps: int, threshold, share,
               tick=lambda: None, method: str = "ig") -> Located:
        """Attributes what is not kept yet (`tick` after each layer group), then locates."""
        for p in self.to_attribute(lm, paraphrases, answer, steps, threshold, share, method):
            self.cache.get(lm, p, answer, steps, self.groups, tick, method)
        prompts = check_paraphrases(paraphrases, self.min_prompts)
        located = locate_from_scores([self.cache.get(lm, p, answer, steps, method=method) for p in prompts],
                                     threshold, share, self.min_prompts)
        self.neurons = located.neurons
        self.located_for = (lm.name, answer.strip(), how(steps, method), tuple(prompts))
        return located

    def same_fact(self, lm: LM, paraphrases: str, answer: str, steps: int, method: str = "ig") -> bool:
        """Whether the neurons were located for this fact (then a new threshold or share re-locates at once)."""
        prompts = tuple(line.strip() for line in paraphrases.splitlines() if line.strip())
        return self.located_for == (lm.name, answer.strip(), how(steps, method), prompts)

    def boxed(self) -> list[Neuron]:
        """The neurons to mark on the heatmap: the located ones, if located for the attributed answer."""
        same = self.located_for is not None and self.scored_for is not None \
            and self.located_for[:3] == (self.scored_for[0], *self.scored_for[2:])
        return list(self.neurons) if same else []

    def intervene(self, lm: LM, mode: str, factor: float) -> pd.DataFrame | None:
        """`intervention_table` over the paraphrases the neurons were located from (None before locating)."""
        check_mode(mode)
        if self.neurons is None:
            self.table = None
        else:
            _, answer, _, prompts = self.located_for
            self.table = intervention_table(lm, list(prompts), answer, self.neurons, mode, factor)
        return self.table


# ---- tables for the view --------------------------------------------------------------------------

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


def message(err: BaseException) -> str:
    """A one-line reading of an error for the widget (no traceback)."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    return text if isinstance(err, (ValueError, ImportError)) else f"{type(err).__name__}: {text}"
