"""`rome`: a rank-one update of one FFN output matrix (Meng et al. 2022; read from kmeng01/rome,
`../shared/design/successors.md` section 2).

Per request, at the subject's last token of its editing prompt: the key k (the FFN site, the input of
the output matrix W) and the output m = W k (+ bias). v* = m + delta, delta optimised (Adam) so that
adding it to the FFN output at that position in every prompt of the request makes the new object
likely, with a KL term keeping the distribution after "{subject} is a" and a weight decay; |delta| is
clamped to `clamp` |m|. The update W' = W + C^-1 k (v* - m)^T / (k . C^-1 k) (in value-slot layout:
slots [width, hidden] += u (v* - m)^T / (k . u), u = C^-1 k) meets W' k = v* exactly and changes W the
least in the metric of C.

C, the keys' uncentered second moment E[k k^T]: "identity" (EasyEdit's default, `mom2_adjustment:
false`), or "generated": estimated from `cov_tokens` tokens the model writes itself (seeded samples at
temperature 1 from its BOS), the only text every model reaches offline (ROME used 100,000 Wikipedia
articles, which kn does not ship), plus `ridge` times the mean of its diagonal (the keys of a short
sample span fewer directions than the FFN is wide). Many requests: one update after another, each
computed on the model the previous ones edited (ROME's sequential editing). The layer is given, or
layer="trace": each request's own, chosen by causal tracing (`kn.edits.tracing`) on the model before the
batch's edits.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .. import checks
from ..hooks import frozen_params, hooked
from ..models import LM
from .base import Method, Request, batch_losses, log_probs, restored
from .tracing import causal_trace, subject_last

COVARIANCES = ("identity", "generated")
TRACE = "trace"  # layer="trace": the layer chosen per request by causal tracing (kn.edits.tracing)
_CACHE: dict = {}  # (id(model), layer, cov_tokens, seed) -> C: the sample is costly, the model the same


def key_and_output(lm: LM, layer: int, prompt: str, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(k [width], m [hidden]): the FFN site and the output matrix's output at `pos` of `prompt`."""
    seen = {}

    def fn(module, args, output):  # a flat FFN (OPT) sees [seq, .]: reshaped to [1, seq, .]
        k, out = args[0].reshape(1, -1, args[0].shape[-1]), output.reshape(1, -1, output.shape[-1])
        seen["k"], seen["m"] = k[0, pos].detach().clone(), out[0, pos].detach().clone()
    ids = torch.tensor([lm.tokenizer(prompt.rstrip())["input_ids"]], device=lm.device)
    with torch.no_grad(), hooked([(lm.down_proj(layer), "post", fn)]):
        lm.model(input_ids=ids, use_cache=False)
    return seen["k"], seen["m"]


def sample_keys(lm: LM, layer: int, n_tokens: int, seed: int = 0, length: int = 32) -> torch.Tensor:
    """C = mean k k^T (float64) over `n_tokens` FFN keys of text the model samples itself (temperature 1,
    seeded, from BOS, `length` tokens a text; BOS's own key left out). Each text is sampled a token at a
    time over a key/value cache (the draws, in order, of one generator), then read in one pass for its keys."""
    from ..ig.kvcache import empty, keyword

    key = (id(lm.model), layer, n_tokens, seed)
    if key in _CACHE:
        return _CACHE[key]
    g = torch.Generator().manual_seed(seed)
    bos = lm.tokenizer.bos_token_id
    if bos is None:
        bos = lm.tokenizer.eos_token_id
    total, count = torch.zeros(lm.width, lm.width, dtype=torch.float64), 0
    acc = {}

    def fn(module, args, output):
        k = args[0].reshape(-1, args[0].shape[-1])[1:].double()  # the batch-1 sequence without BOS
        acc["sum"] = k.T @ k
        acc["n"] = k.shape[0]
    with torch.no_grad():
        while count < n_tokens:
            ids, cache = [bos], empty(lm)
            for _ in range(min(length, n_tokens - count + 1)):
                step = torch.tensor([ids[-1:] if len(ids) > 1 else ids], device=lm.device)
                logits = lm.model(input_ids=step, use_cache=True, **keyword(lm.model, cache)).logits[0, -1]
                ids.append(int(torch.multinomial(torch.softmax(logits.float().cpu(), -1), 1, generator=g)))
            with hooked([(lm.down_proj(layer), "post", fn)]):
                lm.model(input_ids=torch.tensor([ids], device=lm.device), use_cache=False)
            total += acc["sum"].cpu()
            count += acc["n"]
    _CACHE[key] = total / count
    return _CACHE[key]


@dataclass(frozen=True)
class ROME(Method):
    """layer: the edited FFN (None: round(n_layers / 3), ROME's GPT-2 XL choice 17/48 as a share; "trace":
    per request, the layer whose FFN output at the subject's last token has the largest indirect effect on
    the old object (`kn.edits.tracing.causal_trace` with its defaults: 10 noise samples of 3 x the
    embeddings' std, window 1, seed 0), traced on the model before any request of the batch is edited);
    steps, lr, kl_factor, weight_decay, clamp, stop_loss: v*'s optimisation (ROME's GPT-2 XL
    hyperparameters); covariance, cov_tokens, ridge, seed: C."""

    name = "rome"
    writes_slots = True
    needs = ("subject",)
    causal_only = True
    layer: int | str | None = None
    steps: int = 20
    lr: float = 0.5
    kl_factor: float = 0.0625
    weight_decay: float = 0.5
    clamp: float = 4.0
    stop_loss: float = 0.05
    covariance: str = "identity"
    cov_tokens: int = 2000
    ridge: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.layer, str):
            if self.layer != TRACE:
                raise checks.ArgumentError(f"layer must be an int >= 0, None or {TRACE!r}, got {self.layer!r}")
        elif self.layer is not None:
            checks.integer(self.layer, "layer", low=0)
        checks.integer(self.steps, "steps", low=0), checks.integer(self.cov_tokens, "cov_tokens", low=1)
        for f in ("lr", "kl_factor", "weight_decay", "clamp", "stop_loss", "ridge"):
            checks.number(getattr(self, f), f, low=0.0)
        if self.covariance not in COVARIANCES:
            raise checks.ArgumentError(f"covariance must be one of {COVARIANCES}, got {self.covariance!r}")

    def layer_of(self, lm: LM) -> int:
        """The edited layer when it does not depend on the request (layer not "trace")."""
        if self.layer == TRACE:
            raise ValueError("layer='trace' is chosen per request: use layers_of(lm, requests)")
        layer = round(lm.n_layers / 3) if self.layer is None else self.layer
        return checks.integer(layer, "layer", high=lm.n_layers - 1)

    def layers_of(self, lm: LM, requests, *, fresh: bool = False) -> list[int]:
        """The edited layer of each request. layer="trace": the layers the last `apply` of this method on
        the same model and requests traced (kept so `touched` and `chosen` do not trace again), else (or
        with `fresh`) traced on the model as it is now."""
        if self.layer != TRACE:
            return [self.layer_of(lm)] * len(requests)
        key = (id(lm.model), tuple((r.prompt, r.subject, str(r.old)) for r in requests))
        last = self.__dict__.get("_traced")
        if not fresh and last is not None and last[0] == key:
            return list(last[1])
        layers = [causal_trace(lm, r.prompt, r.subject, r.old).layer for r in requests]
        object.__setattr__(self, "_traced", (key, layers))  # not a setting: asdict and equality ignore it
        return layers

    def chosen(self, lm, requests):
        """Each request's edited layer, {"layer": l} (traced with layer="trace", else the given one)."""
        return [{"layer": l} for l in self.layers_of(lm, requests)]

    def key_inverse(self, lm: LM, layer: int, k: torch.Tensor) -> torch.Tensor:
        """u = C^-1 k (k itself for C = I)."""
        if self.covariance == "identity":
            return k
        c = sample_keys(lm, layer, self.cov_tokens, self.seed)
        c = c + self.ridge * c.diagonal().mean() * torch.eye(c.shape[0], dtype=c.dtype)
        return torch.linalg.solve(c, k.double().cpu()).to(k)

    def target(self, lm: LM, layer: int, r: Request, m: torch.Tensor) -> torch.Tensor:
        """v* = m + delta for request `r` (m: the output at the editing prompt's subject-last token). Each
        step reads every prompt and the KL prompt in one pass (`batch_losses`), delta added at each row's
        subject-last token."""
        delta = torch.zeros_like(m, dtype=torch.float32, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=self.lr)
        kl_prompt = f"{r.subject} is a"
        pairs = [(p, r.new) for p in r.prompts]
        at = torch.tensor([subject_last(lm, p, r.subject) for p in (*r.prompts, kl_prompt)], device=lm.device)
        rows = torch.arange(len(at), device=lm.device)
        flat = lm.family.flat_ffn

        def fn(module, args, output):
            out = output.reshape(len(at), -1, output.shape[-1]) if flat else output
            out = out.index_put((rows, at), out[rows, at] + delta.to(out.dtype))
            return out.reshape(output.shape)
        with torch.no_grad():
            p0 = log_probs(lm, kl_prompt)
        with frozen_params(lm.model), torch.enable_grad(), hooked([(lm.down_proj(layer), "post", fn)]):
            for step in range(self.steps):
                sums, _, (q,) = batch_losses(lm, pairs, [kl_prompt])
                kl = torch.sum(q.exp() * (q - p0))
                loss = sums.mean() + self.kl_factor * kl + self.weight_decay * delta.norm() / m.norm() ** 2
                if loss.item() < self.stop_loss or step == self.steps - 1:
                    break
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    bound = self.clamp * m.norm()
                    if delta.norm() > bound:
                        delta.mul_(bound / delta.norm())
        return m + delta.detach().to(m.dtype)

    def update(self, lm: LM, layer: int, r: Request) -> torch.Tensor:
        """The rank-one change [width, hidden] of the layer's value slots for request `r`."""
        k, m = key_and_output(lm, layer, r.prompt, subject_last(lm, r.prompt, r.subject))
        v = self.target(lm, layer, r, m)
        u = self.key_inverse(lm, layer, k)
        return torch.outer(u, v - m) / torch.dot(k, u)

    def touched(self, lm, requests):
        # rank one per request, but every weight of each edited matrix moves
        return 0, sum(lm.value_slots(l).numel() for l in sorted(set(self.layers_of(lm, requests))))

    @contextmanager
    def apply(self, lm, requests):
        layers = self.layers_of(lm, requests, fresh=True)
        with restored([lm.value_slots(l) for l in sorted(set(layers))]):
            for layer, r in zip(layers, requests):
                slots = lm.value_slots(layer)
                change = self.update(lm, layer, r)
                with torch.no_grad():
                    slots.add_(change.to(slots.dtype))
            yield
