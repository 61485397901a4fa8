"""The output layer's product for a few rows on a CPU in float32, computed as W h^T.

CPU BLAS (MKL, torch 2.13) computes h W^T (`torch.nn.functional.linear`) for a handful of rows and a
vocabulary-sized W [V, d] far below its speed: on gemma-3-270m's head (262,144 x 640, 2 cores) 56 ms for
one row, 129 ms for 2 to 6, 124 for 16, against 26, 26, 48 and 98 ms for W h^T (h's transpose a strided
view; one row doubled, since a single column falls to a slower matrix-vector product). Past 64 rows the two
meet. A decode step and an answer-position read are such products: `install` gives the output layer of a
model `kn.load` made the faster one. Only the order of the float32 sums differs from `linear`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAX_ROWS = 64  # above this, linear is as fast (measured on gemma-3-270m and smollm2-135m's heads)


def product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """linear(x, weight, bias) [..., V] for x [..., d], as W x^T where that is faster (float32, at most
    MAX_ROWS rows, one row doubled unless a gradient flows back through it)."""
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    if (x.dtype != torch.float32 or weight.dtype != torch.float32 or not 0 < n <= MAX_ROWS
            or (n == 1 and torch.is_grad_enabled() and x.requires_grad)):
        return F.linear(x, weight, bias)
    if n == 1:
        rows = torch.cat([rows, rows])
    out = (weight @ rows.T).T[:n].contiguous()
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


class HeadLinear(nn.Linear):
    """An nn.Linear whose forward is `product`: what `install` makes a CPU model's output layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return product(x, self.weight, self.bias)


def install(head: nn.Module) -> None:
    """Make `head` a `HeadLinear` if it is a plain nn.Linear on the CPU (same parameters, same hooks);
    anything else is left alone."""
    if type(head) is nn.Linear and head.weight.device.type == "cpu":
        head.__class__ = HeadLinear
