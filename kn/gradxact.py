"""Gradient x activation (`kn.GradXAct`; successors.md section 7): s = x * dP(gold)/dx at the clean
site activations x, every layer from one forward and one backward pass per answer token.

It is the first-order estimate of what zeroing a neuron does, and IG with one right-endpoint point
from a zero baseline where no post-FFN norm is frozen (GPT-2, Llama, Qwen...); here every norm runs
as it does (its Jacobian included). One pass instead of IG's layers x steps: a cheap screen.
`grad_x_act_targets` scores several answer tokens with their output-layer walks shared (`kn.ig.walks`);
`screen_targets` also records each one's `Clean` from its forward (the probes are zeros: every value is
the clean one), which IG on the layers the screen keeps reuses instead of a clean run of its own.
"""
from __future__ import annotations

import torch

from .hooks import frozen_params, site_hooks, stop_at_head
from .ig.clean import Clean, Recording, run_to_head
from .ig.head import AtHead
from .ig.plan import row_bytes
from .ig.walks import Walks
from .models import LM
from .tokens import Target


def forward(lm: LM, t: Target, layers: list[int], rec: Recording | None = None) -> tuple[AtHead, dict[int, torch.Tensor]]:
    """One forward pass of `t` stopped at the output layer, with a zero probe added at each site of
    `layers` (its leaves, in that order), and the clean site activations x {layer: [width]}; `rec`, if
    given, records the pass (its hooks and inputs: a cache to fill when the path runs cached)."""
    # a zero probe added at each site: dP/d(probe) is dP/dx with every layer above still reading x
    # (a site replaced by a leaf of its own would cut the higher layers off from the lower ones)
    probes: dict[int, torch.Tensor] = {}
    x: dict[int, torch.Tensor] = {}

    def splice(layer: int, act: torch.Tensor) -> torch.Tensor:
        x[layer] = act[0, t.pos].detach()
        probes[layer] = torch.zeros_like(x[layer], requires_grad=True)
        out = act.clone()
        out[0, t.pos] = act[0, t.pos] + probes[layer]
        return out

    store: dict = {}
    hooks = site_hooks(lm, splice, layers) + [stop_at_head(lm, t.pos, store)]
    inputs = dict(input_ids=t.ids, use_cache=False) if rec is None else rec.inputs
    with torch.enable_grad():
        run_to_head(lm.model, (rec.hooks if rec else []) + hooks, **inputs)
    return AtHead(store["h"], [probes[l] for l in layers], t.gold), x


def product(lm: LM, x: dict[int, torch.Tensor], grads, layers: list[int]) -> torch.Tensor:
    """x * grad [n_layers, width] (float32, CPU), zero outside `layers` (grads in their order)."""
    out = torch.zeros(lm.n_layers, lm.width)
    for l, g in zip(layers, grads):
        out[l] = (x[l].float() * g.float()).cpu()
    return out


def _targets(lm: LM, ts: list[Target], layers: list[int], walks: Walks | None,
             record: bool) -> tuple[list[torch.Tensor], list[Clean | None]]:
    walks = Walks(lm) if walks is None else walks
    out: list[torch.Tensor | None] = [None] * len(ts)
    cleans: list[Clean | None] = [None] * len(ts)

    def queue(i: int, t: Target) -> None:
        x: dict[int, torch.Tensor] = {}
        rec = Recording(lm, t) if record else None  # dropped with the pass once walked (its cache: the graph's)

        def run() -> AtHead:
            at, xs = forward(lm, t, layers, rec)
            x.update(xs)
            return at

        def done(grads) -> None:
            out[i] = product(lm, x, grads, layers)
            if rec is not None:
                cleans[i] = rec.clean()

        seq = t.ids.shape[1]
        walks.add(run, done, 1, row_bytes(lm, seq, seq))

    with frozen_params(lm.model):
        for i, t in enumerate(ts):
            queue(i, t)
        walks.flush()
    return out, cleans


def grad_x_act_targets(lm: LM, ts: list[Target], layers: list[int], walks: Walks | None = None) -> list[torch.Tensor]:
    """x * dP(gold)/dx [n_layers, width] (float32, CPU) of each answer token, zero outside `layers`; the
    output layer's walks shared by `walks` (default: a fresh `Walks(lm)`)."""
    return _targets(lm, ts, layers, walks, record=False)[0]


def screen_targets(lm: LM, ts: list[Target], layers: list[int],
                   walks: Walks | None = None) -> tuple[list[torch.Tensor], list[Clean]]:
    """`grad_x_act_targets`' scores of each answer token, and its `Clean` recorded from the same forward
    pass (what `kn.ig.clean.clean_run` would record: detached, the cache a plain tensor)."""
    return _targets(lm, ts, layers, walks, record=True)


def grad_x_act_target(lm: LM, t: Target, layers: list[int]) -> torch.Tensor:
    """x * dP(gold)/dx [n_layers, width] (float32, CPU) of one answer token, zero outside `layers`."""
    return grad_x_act_targets(lm, [t], layers)[0]
