"""Gradient x activation (`kn.GradXAct`; successors.md section 7): s = x * dP(gold)/dx at the clean
site activations x, every layer from one forward and one backward pass (several answer tokens share one).

It is the first-order estimate of what zeroing a neuron does, and IG with one right-endpoint point
from a zero baseline where no post-FFN norm is frozen (GPT-2, Llama, Qwen...); here every norm runs
as it does (its Jacobian included). One pass instead of IG's layers x steps: a cheap screen.
`grad_x_act_targets` scores several answer tokens in a few passes, their contexts right-padded into
one batch each (with the attention mask, a row computes as it would alone; each is read at its own answer
position), one backward per pass, the output-layer walks shared (`kn.ig.walks`): a pass per prompt
would read every weight for one short row. `screen_targets` also records each one's `Clean` from that
forward (the probes are zeros: every value is the clean one), which IG on the layers the screen keeps
reuses instead of a clean run of its own.
"""
from __future__ import annotations

import torch

from .hooks import at_rows, frozen_params, site_hooks, stop_at_head
from .ig.clean import Clean, Recording, run_to_head
from .ig.head import AtHead
from .ig.plan import row_bytes, token_bytes
from .ig.walks import Walks
from .interventions import answer_rows, rows_at
from .models import LM
from .probing import length_passes
from .tokens import Target, batch_inputs


def forward(lm: LM, ts: list[Target], layers: list[int],
            rec: Recording | None = None) -> tuple[AtHead, dict[int, torch.Tensor]]:
    """One forward pass of the targets' contexts as one batch (`kn.tokens.batch_inputs`) stopped at the
    output layer, with a zero probe [n, width] added at each site of `layers` (its leaves, in that order)
    at each row's answer position, and the clean site activations x {layer: [n, width]} there; `rec`, if
    given (over the same targets), records the pass (its hooks and inputs: a cache to fill when cached)."""
    # a zero probe added at each site: dP/d(probe) is dP/dx with every layer above still reading x
    # (a site replaced by a leaf of its own would cut the higher layers off from the lower ones)
    at = torch.tensor([t.pos for t in ts], device=lm.device)
    probes: dict[int, torch.Tensor] = {}
    x: dict[int, torch.Tensor] = {}

    def splice(layer: int, act: torch.Tensor) -> torch.Tensor:
        x[layer] = at_rows(act, at).detach()
        probes[layer] = torch.zeros_like(x[layer], requires_grad=True)
        rows = (torch.arange(len(ts), device=act.device), at.to(act.device))
        return act.index_put(rows, probes[layer], accumulate=True)

    store: dict = {}
    hooks = site_hooks(lm, splice, layers) + [stop_at_head(lm, at, store)]
    inputs = dict(batch_inputs(lm, ts), use_cache=False) if rec is None else rec.inputs
    # an active `kn.scaled(positions="answer")` acts at each row's answer, not at a padded row's last slot
    with torch.enable_grad(), answer_rows(rows_at(inputs["input_ids"].shape[1], at)):
        run_to_head(lm.model, (rec.hooks if rec else []) + hooks, **inputs)
    return AtHead(store["h"], [probes[l] for l in layers], torch.tensor([t.gold for t in ts])), x


def products(lm: LM, x: dict[int, torch.Tensor], grads, layers: list[int]) -> list[torch.Tensor]:
    """x * grad [n_layers, width] (float32, CPU) of each row of x {layer: [n, width]}, zero outside
    `layers` (grads [n, width] in their order)."""
    out = torch.zeros(len(grads[0]), lm.n_layers, lm.width)
    for l, g in zip(layers, grads):
        out[:, l] = (x[l].float() * g.float()).cpu()
    return list(out.unbind(0))


def _targets(lm: LM, ts: list[Target], layers: list[int], walks: Walks | None,
             record: bool) -> tuple[list[torch.Tensor], list[Clean | None]]:
    """Scores (and, `record`, Cleans) of `ts`, in padded passes of several targets (`kn.probing.length_passes`:
    sorted by length, at most what `walks` holds for the backward pass in tokens and rows)."""
    walks = Walks(lm) if walks is None else walks
    out: list[torch.Tensor | None] = [None] * len(ts)
    cleans: list[Clean | None] = [None] * len(ts)

    def queue(rows: list[int]) -> None:
        batch = [ts[r] for r in rows]
        x: dict[int, torch.Tensor] = {}
        rec = Recording(lm, batch) if record else None  # dropped with the pass once walked (its cache: the graph's)

        def run() -> AtHead:
            at, xs = forward(lm, batch, layers, rec)
            x.update(xs)
            return at

        def done(grads) -> None:
            for r, s in zip(rows, products(lm, x, grads, layers)):
                out[r] = s
            for r, c in zip(rows, rec.cleans() if rec is not None else []):
                cleans[r] = c

        width = max(t.ids.shape[1] for t in batch)
        walks.add(run, done, len(rows), len(rows) * row_bytes(lm, width, width))

    lengths = [t.ids.shape[1] for t in ts]
    tokens = max(1, int(walks.budget // token_bytes(lm)))
    with frozen_params(lm.model):
        for rows in length_passes(lm, lengths, tokens, max(1, walks.max_rows)):
            queue(rows)
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
