"""Log-probability increase (`kn.LogProbIncrease`, method "logprob"; Yu & Ananiadou, EMNLP 2024, "Neuron-level
knowledge attribution in large language models"; successors.md section 6): a static score, one forward pass and
no gradients.

At the answer-predicting position, for layer l:

    Imp_i = log p(w | h + write_i) - log p(w | h),    p(. | x) = softmax(cap(W_U N(x) + b))

h: the residual stream the layer's FFN output joins, without it (the block's output minus the FFN's whole
  contribution, the projection's bias included: in a pre-LN block, the stream after attention, i.e. the FFN's
  input residual; with GPT-NeoX's parallel residual, the stream plus attention).
m_i, write_i: neuron i's activation (its site value) and what it writes, m_i times its value slot W_out[:, i]
  (`kn.arch.value_slots`). Families with a post-FFN norm (Gemma-2/3) put the FFN output u = sum_i m_i W_out[:, i]
  through an RMSNorm P before the residual add. Neuron i's write there is P with its scale frozen at the clean
  u (kn's `freeze_norm` convention for IG): write_i = g_P * m_i W_out[:, i] * rsqrt(mean(u^2) + eps). P frozen
  is linear, so the writes sum to exactly what the FFN adds (bias terms aside); the single write is not
  normalised on its own, which would give every neuron the norm of the whole FFN output.
N: the final norm (the family table's `final_norm`) with its scale frozen at the clean run's final stream, so
  N(x) = g * C(x) * s (C: centring for a LayerNorm, the identity for an RMSNorm; g: its gain, read off the
  module). A LayerNorm's bias is dropped, as the reference code does for GPT-2's ln_f (zepingyu0512/
  neuron-attribution, GPT2_view_knowledge.ipynb, get_bsvalues: centre, divide by the final stream's frozen
  std, times ln_f's weight, then lm_head; its h for FFN neurons is the stream after attention, as here).
W_U, b, cap: the output layer as the model runs it (weight, bias if any, final logit softcap if any).
w: the gold answer token, kn's convention for every method (the reference code scores the model's top-1
  prediction instead).

Later layers are not run: the write is read off directly through the output layer (a logit-lens reading).
All neurons of a layer go as one batch, the vocabulary in chunks: log p(w | h + write_i) - log p(w | h) =
dz_iw - log sum_v p(v | h) exp(dz_iv), dz_i the change of the logits, so the difference is never taken
between two large log-probabilities. The cost is width x vocabulary x hidden multiply-adds per layer, more
than a backward pass on a large vocabulary (GradXAct); `layers=` limits it. A multi-token answer sums its
tokens' scores. Causal pre-LN LMs only: a masked LM's head is no norm, and a post-LN block renormalises the
stream, so there is no sum of writes that the head reads (UnsupportedModelError).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from .arch import UnsupportedModelError
from .attribution import register
from .hooks import site_hooks, stop_at_head
from .ig.clean import run_to_head
from .ig.head import params
from .models import LM
from .tokens import Target, targets

CHUNK = 4096  # vocabulary rows per matmul


@dataclass(frozen=True)
class LogProbIncrease:
    """Log-probability increase (Yu & Ananiadou 2024): the score of neuron i is log p(gold | h + its write) -
    log p(gold | h), h the residual stream its layer's FFN writes to, read through the frozen final norm and
    the output layer; every layer from one forward pass, no gradients (`kn.logprob`)."""

    kind: str = field(default="logprob", init=False, repr=False)
    coarse_threshold: ClassVar[float] = 0.2

    def to_dict(self) -> dict:
        return {"kind": self.kind}


class FrozenNorm:
    """A norm with its scale held at its value for a clean input: x -> g * C(x) * s (no bias), linear."""

    def __init__(self, norm: nn.Module, clean: torch.Tensor, dtype: torch.dtype):
        self.centered = isinstance(norm, nn.LayerNorm)
        eps = getattr(norm, "eps", None)
        eps = getattr(norm, "variance_epsilon") if eps is None else eps
        d = clean.shape[-1]
        if self.centered:
            w = norm.weight
            self.g = torch.ones(d, dtype=dtype) if w is None else w.detach().to(dtype)
        else:  # an RMSNorm's gain, whatever its convention (w, 1 + w): its output on ones, rescaled
            ones = torch.ones(1, d, dtype=dtype, device=clean.device)
            with torch.no_grad():
                self.g = (norm(ones)[0].to(dtype) * (1 + eps) ** 0.5).detach()
        c = self._center(clean.to(dtype))
        self.s = torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + eps)

    def _center(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True) if self.centered else x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.g.to(x.device) * self._center(x) * self.s


def check_supported(lm: LM) -> None:
    """UnsupportedModelError unless `lm` is a causal pre-LN LM with a final norm in the family table."""
    post_ln = any(lm.residual_norm(l) is not None for l in range(lm.n_layers))
    if lm.masked or lm.final_norm is None or post_ln:
        why = ("a masked LM (its head is a dense layer and a norm, not a norm)" if lm.masked else
               "post-LN (each block renormalises the stream)" if post_ln else "without a final norm")
        raise UnsupportedModelError(
            f"LogProbIncrease reads a layer's residual stream through the final norm and the output layer; "
            f"{lm.name} ({lm.family.name}) is {why}. Use kn.IG(...) or kn.GradXAct() for it.")


@dataclass
class Stream:
    """One clean pass at the answer position: h[l] [d] (the stream layer l's FFN writes to, without it),
    acts[l] [width], post[l] (the frozen post-FFN norm, or None), final (the frozen final norm)."""

    h: dict
    acts: dict
    post: dict
    final: FrozenNorm


def _tensor(out):
    return out[0] if isinstance(out, tuple) else out


def clean_stream(lm: LM, t: Target, layers: list[int], dtype: torch.dtype) -> Stream:
    """Run the model once to the output layer's input, reading what `log_prob_increase_target` needs."""
    pos = t.pos
    acts, ffn_out, ffn_in, block_out, final_in = {}, {}, {}, {}, {}

    def read(layer, act):
        acts[layer] = act[0, pos].detach()

    def row(x):  # [1, T, d] or OPT's flat [T, d] -> the answer position's row [d]
        return x.reshape(-1, x.shape[-1])[pos].detach()

    def contribution(layer):  # what the FFN adds to the stream: the post-FFN norm's output, or the projection's
        def fn(module, args, output):
            ffn_out[layer] = row(_tensor(output))
            ffn_in[layer] = row(args[0])
        return fn

    def block(layer):
        def fn(module, args, output):
            block_out[layer] = _tensor(output)[0, pos].detach()
        return fn

    def final(module, args, kwargs):
        final_in["x"] = (args[0] if args else kwargs["hidden_states"])[0, pos].detach()

    hooks = site_hooks(lm, read, layers) + [(lm.final_norm, "pre", final), stop_at_head(lm, pos, {})]
    for l in layers:
        hooks += [(lm.post_ffn_norm(l) or lm.down_proj(l), "post", contribution(l)), (lm.blocks[l], "post", block(l))]
    with torch.no_grad():
        run_to_head(lm.model, hooks, input_ids=t.ids, use_cache=False)
    h = {l: block_out[l].to(dtype) - ffn_out[l].to(dtype) for l in layers}
    post = {l: None if (n := lm.post_ffn_norm(l)) is None else FrozenNorm(n, ffn_in[l], dtype) for l in layers}
    return Stream(h, {l: acts[l].to(dtype) for l in layers}, post, FrozenNorm(lm.final_norm, final_in["x"], dtype))


def _cap(u: torch.Tensor, cap: float | None) -> torch.Tensor:
    return u if cap is None else cap * torch.tanh(u / cap)


EXPM1_MAX = 80.0  # dz above it (exp overflows float32 near 88) sends the row to the logsumexp pass


def _logit_changes(head: tuple, u0: torch.Tensor, z0: torch.Tensor, dyT: torch.Tensor, c: int, chunk: int):
    """dz [chunk, B]: the change of logits c..c+chunk when the output layer's input moves by dyT [d, B]."""
    W, _, cap = head
    du = W[c:c + chunk].to(dyT.dtype) @ dyT
    return du if cap is None else _cap(u0[c:c + chunk, None] + du, cap) - z0[c:c + chunk, None]


@torch.no_grad()
def increases(head: tuple, y0: torch.Tensor, dy: torch.Tensor, gold: int, chunk: int = CHUNK) -> torch.Tensor:
    """log p(gold | y0 + dy_i) - log p(gold | y0) [B] for the output layer's inputs y0 [d] and y0 + dy_i
    (dy [B, d]), p = softmax(cap(W y + b)), head = (W [V, d], b [V] or None, cap or None).

    It is dz_ig - log S_i, dz_i the change of the logits and S_i = sum_v p(v | y0) exp(dz_iv), the vocabulary
    walked in chunks: log S_i = log1p(sum_v p(v | y0) expm1(dz_iv)), which keeps the digits of small scores
    (a float32 log of S near 1 would not); rows where that sum is not small, or some dz_iv exceeds EXPM1_MAX,
    walk the vocabulary again with a running logsumexp (one exp per logit on the common path, not two)."""
    W, bias, cap = head
    dt = dy.dtype
    u0 = W.to(dt) @ y0 if bias is None else W.to(dt) @ y0 + bias.to(dt)
    z0 = _cap(u0, cap)
    logp0 = torch.log_softmax(z0, -1)
    p0 = logp0.exp()
    dyT = dy.T.contiguous()
    small = torch.zeros(dy.shape[0], dtype=torch.float64, device=dy.device)  # sum_v p0_v expm1(dz_iv)
    top = torch.full((dy.shape[0],), float("-inf"), dtype=dt, device=dy.device)
    for c in range(0, W.shape[0], chunk):
        dz = _logit_changes(head, u0, z0, dyT, c, chunk)
        top = torch.maximum(top, dz.amax(0))
        small += (p0[c:c + chunk] @ torch.expm1(dz.clamp_(max=EXPM1_MAX))).double()
    log_s = torch.log1p(small).to(dt)
    again = ((small.abs() >= 0.5) | (top > EXPM1_MAX)).nonzero()[:, 0]
    if len(again):
        sub = dyT[:, again].contiguous()
        lse = torch.full((len(again),), float("-inf"), dtype=dt, device=dy.device)
        for c in range(0, W.shape[0], chunk):
            dz = _logit_changes(head, u0, z0, sub, c, chunk)
            lse = torch.logaddexp(lse, torch.logsumexp(dz.add_(logp0[c:c + chunk, None]), 0))
        log_s[again] = lse
    dzg = _cap(u0[gold] + dy @ W[gold].to(dt), cap) - z0[gold]
    return dzg - log_s


def log_prob_increase_target(lm: LM, t: Target, layers: list[int], chunk: int = CHUNK) -> torch.Tensor:
    """Imp [n_layers, width] (float32, CPU) of one answer token, zero outside `layers`; every layer's neurons
    as one batch (see the module's docstring)."""
    check_supported(lm)
    dt = torch.float64 if lm.head.weight.dtype == torch.float64 else torch.float32
    s = clean_stream(lm, t, layers, dt)
    head = params(lm)
    out = torch.zeros(lm.n_layers, lm.width)
    for l in layers:
        writes = s.acts[l][:, None] * lm.value_slots(l).detach().to(dt)  # [width, d]
        if s.post[l] is not None:
            writes = s.post[l](writes)
        out[l] = increases(head, s.final(s.h[l]), s.final(writes), t.gold, chunk).float().cpu()
    return out


def log_prob_increase(lm: LM, prompt: str, answer: str, *, layers=None) -> torch.Tensor:
    """Log-probability increase scores [n_layers, width] (float32, CPU; `kn.logprob`), summed over answer
    tokens; zero rows outside `layers`. The gold answer is scored (the reference code scores the model's
    top-1 token)."""
    check_supported(lm)
    layers = lm.check_layers(layers)
    return sum(log_prob_increase_target(lm, t, layers) for t in targets(lm, prompt, answer))


register(LogProbIncrease, lambda lm, prompt, answer, settings, layers: log_prob_increase(lm, prompt, answer,
                                                                                          layers=layers))
