"""The output layer's gradient dP(gold)/dh, computed in vocabulary chunks (online softmax).

P = softmax(z), z = cap * tanh(u / cap) (cap: the final logit softcap, if any), u = h W^T + bias.
Then dP_g/dh = P_g (z'_g W_g - sum_v p_v z'_v W_v): the vocabulary is walked in chunks with a
running max, so the [rows, vocab] logits are never stored. The walk costs about as much for one
row as for dozens (it streams the whole output matrix), so `cotangents` walks once for the rows of
several passes (`AtHead`: a pass stopped at the output layer; `kn.ig.walks` queues them).

The walk's products come in two dtypes (`GRADS`, IG's `head_dtype`): float32, exact logits; and
bfloat16, whose products round once to bfloat16. The bfloat16 walk computes each chunk's u - s inside the
product (s: the row's running max, so the logits that carry the softmax's mass round at their small
distance from it) and sums the gold token apart in float32 (so that 1 - P(gold) does not cancel).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import LM

CHUNK = 2048


def params(lm: LM) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
    """The output layer's weight [vocab, d], bias [vocab] or None, and final logit softcap or None."""
    head = lm.head
    return head.weight, head.bias, getattr(lm.text_config, "final_logit_softcapping", None)


def _logit(u: torch.Tensor, cap: float | None):
    """z and dz/du of the softcap z = cap * tanh(u / cap) (the identity without a cap)."""
    if cap is None:
        return u, 1.0
    t = torch.tanh(u / cap)
    return cap * t, 1 - t * t


@torch.no_grad()
def softmax_sums(h: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None, cap: float | None = None,
                 chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One walk over the vocabulary in chunks: the running max m [B], total = sum_v exp(z_v - m) [B]
    and acc = sum_v exp(z_v - m) z'_v W_v [B, d], for the rows of h [B, d] (float32)."""
    B, V = h.shape[0], W.shape[0]
    # logits are computed transposed, [chunk, B] = W_chunk h^T: faster than h W_chunk^T on CPU BLAS
    hT = h.T  # a strided view: MKL is up to 4x faster with it than with a contiguous copy for a few rows
    buf = torch.empty(min(chunk, V) * B, device=h.device)  # reused: fresh large tensors cost page faults
    m = torch.full((B,), float("-inf"), device=h.device)
    total = torch.zeros(B, device=h.device)
    accT = torch.zeros(h.shape[1], B, device=h.device)
    for c in range(0, V, chunk):
        w = W[c:c + chunk].float()
        z = torch.mm(w, hT, out=buf[:w.shape[0] * B].view(w.shape[0], B))
        if bias is not None:
            z += bias[c:c + chunk, None].float()
        if cap is not None:  # z <- cap * tanh(u / cap); dz/du = 1 - tanh^2 comes back from z below
            z.div_(cap).tanh_().mul_(cap)
        m_new = torch.maximum(m, z.amax(0))
        rescale = torch.exp(m - m_new)
        dz = None if cap is None else 1 - (z / cap).pow_(2)
        e = z.sub_(m_new).exp_()
        total = total * rescale + e.sum(0)
        if dz is not None:
            e = e.mul_(dz)
        accT.mul_(rescale).addmm_(w.T, e)
        m = m_new
    return m, total, accT.T


def gold_logits(h: torch.Tensor, W: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """h_b . W[gold_b] [B] (float32) for h [B, d] (float32), gold [B]: one matrix-vector product per
    distinct gold id."""
    out = torch.empty(h.shape[0], device=h.device)
    for g in gold.unique():
        rows = gold == g
        out[rows] = h[rows] @ W[g].float()
    return out


@torch.no_grad()
def gold_prob_grad(h: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None, gold: int | torch.Tensor,
                   cap: float | None = None, chunk: int = CHUNK) -> torch.Tensor:
    """dP(gold)/dh [B, d] (float32) of each row of h [B, d], the output layer's input; gold: one token id
    for every row, or one per row [B]."""
    h = h.detach().float()
    m, total, acc = softmax_sums(h, W, bias, cap, chunk)
    gold = torch.as_tensor(gold, device=W.device).expand(h.shape[0])
    Wg = W[gold].float()  # [B, d]
    ug = gold_logits(h, W, gold)
    if bias is not None:
        ug = ug + bias[gold].float()
    zg, dzg = _logit(ug, cap)
    pg = torch.exp(zg - m) / total
    dzg = dzg if cap is None else dzg[:, None]
    return pg[:, None] * (Wg * dzg - acc / total[:, None])


@torch.no_grad()
def gold_prob_grad_bf16(h: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None, gold: int | torch.Tensor,
                        cap: float | None = None, chunk: int = 2 * CHUNK) -> torch.Tensor:
    """`gold_prob_grad` [B, d] (float32) with bfloat16 products: about 2e-3 of the rows' largest gradient
    (a bfloat16 rounding's size; tests/unit/test_shared_walk.py), twice as fast on CPUs with AVX512-BF16."""
    B, V = h.shape[0], W.shape[0]
    gold = torch.as_tensor(gold, device=W.device).expand(B)
    Wg = W[gold].float()
    shift = gold_logits(h.float(), W, gold)  # the running max of h W_v^T: the next chunk's products start there
    ug = shift if bias is None else shift + bias[gold].float()
    zg, dzg = _logit(ug, cap)
    hT = h.bfloat16().T
    m = zg.clone()  # z's running max
    rest = torch.zeros(B, device=h.device)  # sum over v != gold of exp(z_v - m)
    accT = torch.zeros(h.shape[1], B, device=h.device)  # the same sum of exp(z_v - m) z'_v W_v
    cols = torch.arange(B, device=h.device)
    for c in range(0, V, chunk):
        w = W[c:c + chunk].bfloat16()
        s = shift.bfloat16()
        us = torch.addmm((-s).expand(w.shape[0], B), w, hT)  # u - s, rounded once near s
        top = us.amax(0).float() + s.float()  # each row's largest u here
        shift = torch.maximum(shift, top)
        if bias is None and cap is None:  # z = u: exp(z - m_new) straight from u - s
            m_new = torch.maximum(m, top)
            e = us.float().add_(s.float() - m_new).exp_()
            dz = None
        else:
            u = us.float().add_(s.float())
            if bias is not None:
                u += bias[c:c + chunk, None].float()
            z, dz = _logit(u, cap)
            m_new = torch.maximum(m, z.amax(0))
            e = z.sub_(m_new).exp_()
        rescale = torch.exp(m - m_new)
        here = (gold >= c) & (gold < c + w.shape[0])
        e[gold[here] - c, cols[here]] = 0
        rest = rest * rescale + e.sum(0)
        if cap is not None:
            e = e.mul_(dz)
        accT.mul_(rescale).add_(torch.mm(w.T, e.bfloat16()))
        m = m_new
    eg = torch.exp(zg - m)
    total = rest + eg
    pg = eg / total
    dzg = dzg if cap is None else dzg[:, None]
    return pg[:, None] * ((rest / total)[:, None] * Wg * dzg - accT.T / total[:, None])


GRADS = {"float32": gold_prob_grad, "bfloat16": gold_prob_grad_bf16}  # IG's head_dtype: the walk's products


@dataclass
class AtHead:
    """A forward pass stopped at the output layer: its input h [B, d], holding the autograd graph back to
    `leaves`; `gold` the token id of every row, or one per row [B]; the first `skip` rows need no gradient
    (their cotangent is zero: the clean row of a growing batch)."""

    h: torch.Tensor
    leaves: list[torch.Tensor]
    gold: int | torch.Tensor
    skip: int = 0

    @property
    def rows(self) -> torch.Tensor:
        """The rows that need dP(gold)/dh, [B - skip, d]."""
        return self.h[self.skip:]

    def backward(self, cot: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The leaves' gradients of sum(cot * h) (cot [B, d]); the graph is freed."""
        return torch.autograd.grad(self.h, self.leaves, grad_outputs=cot)


def cotangents(lm: LM, passes: list[AtHead], dtype: str = "float32") -> list[torch.Tensor]:
    """dP(gold)/dh [B, d] of each pass (in its h's dtype, zero on its skipped rows), the rows of every
    pass in ONE walk over the vocabulary, its products in `dtype` (`GRADS`)."""
    W, bias, cap = params(lm)
    rows = [a.rows for a in passes]
    gold = torch.cat([torch.as_tensor(a.gold, dtype=torch.long).cpu().expand(len(a.h))[a.skip:] for a in passes])
    h = torch.cat([r.detach() for r in rows])
    grads = GRADS[dtype](h, W, bias, gold.to(W.device), cap).split([len(r) for r in rows])
    out = []
    for a, g in zip(passes, grads):
        c = torch.zeros(a.h.shape, dtype=torch.float32, device=a.h.device)
        c[a.skip:] = g
        out.append(c.to(a.h.dtype))
    return out

