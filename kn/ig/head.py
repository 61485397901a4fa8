"""The output layer's gradient dP(gold)/dh, computed in vocabulary chunks (online softmax).

P = softmax(z), z = cap * tanh(u / cap) (cap: the final logit softcap, if any), u = h W^T + bias.
Then dP_g/dh = P_g (z'_g W_g - sum_v p_v z'_v W_v): the vocabulary is walked in chunks with a
running max, so the [rows, vocab] logits are never stored.
"""
from __future__ import annotations

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
    hT = h.T.contiguous()
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


@torch.no_grad()
def gold_prob_grad(h: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None, gold: int,
                   cap: float | None = None, chunk: int = CHUNK) -> torch.Tensor:
    """dP(gold)/dh [B, d] (float32) of each row of h [B, d], the output layer's input."""
    h = h.detach().float()
    m, total, acc = softmax_sums(h, W, bias, cap, chunk)
    ug = h @ W[gold].float()
    if bias is not None:
        ug = ug + bias[gold].float()
    zg, dzg = _logit(ug, cap)
    pg = torch.exp(zg - m) / total
    dzg = dzg if cap is None else dzg[:, None]
    return pg[:, None] * (W[gold].float() * dzg - acc / total[:, None])


def cotangent(lm: LM, h: torch.Tensor, gold: int, skip: int = 0) -> torch.Tensor:
    """dP(gold)/dh for the rows of h [B, d] from `skip` on, zero on the first `skip` rows, in h's dtype."""
    W, bias, cap = params(lm)
    out = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
    out[skip:] = gold_prob_grad(h[skip:], W, bias, gold, cap)
    return out.to(h.dtype)
