"""Attribution of a fact to FFN neurons: integrated gradients (Dai et al. 2022, eq. 3-4) or raw activation.

For layer l, site activation x (at the answer-predicting position) and baseline b (zero by default):
score_l = (x - b) * sum_k w_k dP(gold | b + a_k (x - b)) / d(site), with the points a_k and weights
w_k of a quadrature rule (`kn.RULES`; the paper's "riemann_left": a_k = k / m, w_k = 1 / m).
P is the softmax probability of the gold token. Only the attributed layer's site moves; every other
layer and position runs normally. A multi-token answer is teacher-forced: each answer token is
attributed at the position that predicts it, and the per-token score matrices are summed.

The settings are one value, `kn.IG(steps=, rule=, baseline=, multiplier=, freeze_norm=, batch_size=, screen=,
head_dtype=)`; the keywords of `attribute` override its fields. The kernels live in `kn.ig`: the fast path (default)
and `reference=True`, the plain definition kept as the tests' oracle.

Post-FFN norms (Gemma-2/3): an RMSNorm on the FFN output cancels the path's scaling and makes the
gradient near a = 0 explode. With `freeze_norm=True` (default) the attributed layer's norm scale is
held at its clean value along the path, so the norm becomes a fixed linear map.

Two-stage (`screen=k`): gradient x activation (`grad_x_act`, one forward and backward) scores every
layer given, `kn.screening.top_layers` keeps the k whose best neuron scores highest, and IG runs on
those only (the other rows zero), in the fast path and the reference alike.

`batch_scores` scores several (prompt, answer) pairs as `scores` does one, with the output layer's
vocabulary walk shared among all their passes for IG and GradXAct (`kn.ig.walks`); with a screen, IG
starts from the clean runs its forwards record (`kn.gradxact.screen_targets`) instead of its own.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from . import baselines
from .ig import fast, reference as ref
from .ig.clean import clean_run
from .models import LM
from .screening import top_layers
from .gradxact import grad_x_act_target, grad_x_act_targets, screen_targets
from . import checks
from . import settings as _settings
from .settings import IG, Activation, GradXAct, Settings, resolve
from .tokens import Target, targets


def attribute(lm: LM, prompt: str, answer: str, settings: IG | None = None, *, steps: int | None = None,
              rule: str | None = None, baseline=None, multiplier: str | None = None, freeze_norm: bool | None = None,
              batch_size: int | None = None, screen: int | None = None, head_dtype: str | None = None, layers=None,
              reference: bool = False) -> torch.Tensor:
    """IG attribution scores [n_layers, width] (float32, CPU) of `answer` after / in `prompt`.

    settings: a `kn.IG` (default `IG()`: steps 20, rule "riemann_left", zero baseline, frozen
    post-FFN norms); steps, rule, baseline ("zero", "amig", `kn.AMIG(...)`, a tensor), multiplier,
    freeze_norm, batch_size, screen, head_dtype: override its fields (see `kn.IG`);
    layers: layers to attribute (None = all; the others are zero rows; `screen` picks among them);
    reference: run the plain definition (`kn.ig.reference`: autograd over the full softmax in the model's
    dtype, whatever `head_dtype`) instead of the fast path.
    """
    ig = resolve(settings, steps=steps, rule=rule, baseline=baseline, multiplier=multiplier, freeze_norm=freeze_norm,
                 batch_size=batch_size, screen=screen, head_dtype=head_dtype)
    if not isinstance(ig, IG):
        raise TypeError("kn.attribute computes integrated gradients (kn.IG); for kn.Activation() "
                        "call kn.activations or kn.scores")
    layers = lm.check_layers(layers)
    baselines.check_for(lm, ig.baseline)
    if ig.screen is not None and ig.screen < len(layers):
        layers = top_layers(grad_x_act(lm, prompt, answer, layers=layers), layers, ig.screen)
    kernel = ref.attribute_target if reference else fast.attribute_target
    total = torch.zeros(lm.n_layers, lm.width)
    for t in targets(lm, prompt, answer):
        total += kernel(lm, t, ig, layers)
    return total


def activations(lm: LM, prompt: str, answer: str) -> torch.Tensor:
    """Neuron-site activations [n_layers, width] at the answer-predicting position(s), summed over answer tokens."""
    return sum(clean_run(lm, t).acts.float().cpu() for t in targets(lm, prompt, answer))


def grad_x_act(lm: LM, prompt: str, answer: str, *, layers=None) -> torch.Tensor:
    """Gradient x activation scores [n_layers, width] (float32, CPU; `kn.gradxact`), summed over answer
    tokens; zero rows outside `layers`."""
    layers = lm.check_layers(layers)
    return sum(grad_x_act_target(lm, t, layers) for t in targets(lm, prompt, answer))


# kind -> score(lm, prompt, answer, settings, layers) -> [n_layers, width]; a method is one module that
# defines its settings class and calls `register` once (kn.logprob)
Scorer = Callable[[LM, str, str, Settings, list], torch.Tensor]
SCORERS: dict[str, Scorer] = {}
# kind -> score(lm, prompts, answers, settings, layers) -> [[n_layers, width] per pair]: what `batch_scores`
# uses for the kinds with a batched path (the others: their scorer pair by pair)
BatchScorer = Callable[[LM, list, list, Settings, list], list]
BATCH_SCORERS: dict[str, BatchScorer] = {}


def register(cls: type, score: Scorer, batch: BatchScorer | None = None) -> type:
    """Make `cls` (a settings class, `kn.settings.register`) a method: `scores`, `locate`, `run`, the CLI's
    `--method` and `resolve(method=...)` reach `score` (zero rows outside the layers it is given);
    `batch`, if given, scores several pairs at once for `batch_scores` (the same scores)."""
    _settings.register(cls)
    kind = cls.__dataclass_fields__["kind"].default
    SCORERS[kind] = score
    if batch is not None:
        BATCH_SCORERS[kind] = batch
    return cls


def _masked_activations(lm: LM, prompt: str, answer: str, settings, layers: list[int]) -> torch.Tensor:
    acts = activations(lm, prompt, answer)
    if len(layers) < lm.n_layers:
        mask = torch.zeros(lm.n_layers, 1, dtype=torch.bool)
        mask[layers] = True
        acts = torch.where(mask, acts, torch.zeros_like(acts))
    return acts


def _per_pair(values: list, counts: list[int]) -> list[torch.Tensor]:
    """Sum consecutive runs of `counts` values (each pair's answer tokens, in order)."""
    out, start = [], 0
    for n in counts:
        total = values[start]
        for v in values[start + 1:start + n]:
            total = total + v
        out.append(total)
        start += n
    return out


def _targets(lm: LM, prompts: list, answers: list) -> tuple[list[Target], list[int]]:
    """Every pair's answer tokens in one list, and how many each pair has."""
    per = [targets(lm, p, a) for p, a in zip(prompts, answers)]
    return [t for ts in per for t in ts], [len(ts) for ts in per]


def _batch_grad_x_act(lm: LM, prompts: list, answers: list, layers: list[int]) -> list[torch.Tensor]:
    ts, counts = _targets(lm, prompts, answers)
    return _per_pair(grad_x_act_targets(lm, ts, layers), counts)


def _batch_attribute(lm: LM, prompts: list, answers: list, ig: IG, layers: list[int]) -> list[torch.Tensor]:
    baselines.check_for(lm, ig.baseline)
    ts, counts = _targets(lm, prompts, answers)
    chosen, cleans = [layers] * len(prompts), None
    if ig.screen is not None and ig.screen < len(layers):  # each pair's own screen; its forwards record the clean runs
        screened, cleans = screen_targets(lm, ts, layers)
        chosen = [top_layers(g, layers, ig.screen) for g in _per_pair(screened, counts)]
    per_target = [c for c, n in zip(chosen, counts) for _ in range(n)]
    return _per_pair(fast.attribute_targets(lm, list(zip(ts, per_target)), ig, cleans=cleans), counts)


register(IG, lambda lm, prompt, answer, settings, layers: attribute(lm, prompt, answer, settings, layers=layers),
         _batch_attribute)
register(Activation, _masked_activations)
register(GradXAct, lambda lm, prompt, answer, settings, layers: grad_x_act(lm, prompt, answer, layers=layers),
         lambda lm, prompts, answers, settings, layers: _batch_grad_x_act(lm, prompts, answers, layers))


def scores(lm: LM, prompt: str, answer: str, settings: Settings | None = None, *, layers=None) -> torch.Tensor:
    """The neuron scores [n_layers, width] that `settings` defines: `attribute` for `kn.IG`,
    `grad_x_act` for `kn.GradXAct()`, `activations` for `kn.Activation()`, `kn.logprob.log_prob_increase`
    for `kn.LogProbIncrease()`, any registered kind's scorer (`SCORERS`); zero rows outside `layers`."""
    settings = resolve(settings)
    return SCORERS[settings.kind](lm, prompt, answer, settings, lm.check_layers(layers))


def batch_scores(lm: LM, prompts: Sequence[str], answers, settings: Settings | None = None, *,
                 layers=None) -> list[torch.Tensor]:
    """`scores` [n_layers, width] of each prompt with its answer (one for all, or one per prompt), in
    prompt order. IG and GradXAct run every pair's passes first and share the output layer's walk over
    the vocabulary among them (`kn.ig.walks`; equal to `scores` pair by pair up to float summation order;
    IG's screen stays per prompt); other kinds are scored pair by pair."""
    settings = resolve(settings)
    prompts = list(prompts)
    answers = [answers] * len(prompts) if isinstance(answers, str) else list(answers)
    if len(answers) != len(prompts):
        raise checks.ArgumentError(f"{len(prompts)} prompts but {len(answers)} answers; pass one answer or one "
                                   f"per prompt")
    layers = lm.check_layers(layers)
    batch = BATCH_SCORERS.get(settings.kind)
    if batch is None:
        return [SCORERS[settings.kind](lm, p, a, settings, layers) for p, a in zip(prompts, answers)]
    return batch(lm, prompts, answers, settings, layers) if prompts else []


__all__ = ["attribute", "activations", "grad_x_act", "scores", "batch_scores", "register", "SCORERS", "BATCH_SCORERS",
           "IG", "Activation", "GradXAct"]
