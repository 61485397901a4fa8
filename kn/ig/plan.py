"""The fast path's row plan: which path rows (layer, point, weight) go into which forward pass.

Rows are the attributed layers' path points, layer by layer ([l0 x m, l1 x m, ...]); a pass takes
the next `batch` of them, so one pass can hold rows of several layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import LM
from ..quadrature import Quadrature


@dataclass(frozen=True)
class Pass:
    """One forward pass: distinct `layers` (ascending) with `counts` rows each; points and weights
    [n_rows] (float32) in row order."""

    layers: tuple[int, ...]
    counts: tuple[int, ...]
    points: torch.Tensor
    weights: torch.Tensor

    @property
    def n_rows(self) -> int:
        return len(self.points)

    def by_layer(self, rows: torch.Tensor) -> dict[int, torch.Tensor]:
        """Split a per-row tensor [n_rows, ...] into {layer: [count, ...]}."""
        return dict(zip(self.layers, rows.split(list(self.counts))))

    def batch_sizes(self, n_layers: int, grow: bool) -> list[int]:
        """The batch present at each block: all rows from the input, or (grow) the clean row plus the
        rows of the layers below the block."""
        if not grow:
            return [self.n_rows] * n_layers
        return [1 + sum(c for l, c in zip(self.layers, self.counts) if l < i) for i in range(n_layers)]


def plan(layers: list[int], q: Quadrature, batch: int) -> list[Pass]:
    """The passes of one answer token: len(layers) * m rows in passes of at most `batch` rows."""
    m = len(q.points)
    row_layer = [l for l in layers for _ in range(m)]
    points, weights = q.points.float().repeat(len(layers)), q.weights.float().repeat(len(layers))
    out = []
    for s in range(0, len(row_layer), batch):
        ls = row_layer[s:s + batch]
        distinct = sorted(set(ls))
        out.append(Pass(tuple(distinct), tuple(ls.count(l) for l in distinct),
                        points[s:s + batch], weights[s:s + batch]))
    return out


def path_points(p: Pass, x: torch.Tensor, base: torch.Tensor) -> dict[int, torch.Tensor]:
    """The pass's path points b + a (x - b), {layer: [count, width]} in x's dtype, requiring grad."""
    a = p.by_layer(p.points.to(x))
    return {l: (base[l] + a[l][:, None] * (x[l] - base[l])).requires_grad_(True) for l in p.layers}


BUDGET = 1.5e9  # bytes one pass may hold for the backward pass
# bytes a row keeps per (token, hidden + FFN width) per block it runs whole: about 10 measured on
# BERT-base (a masked LM: the only kind whose rows run the whole prompt; causal rows run one token)
BYTES_PER_UNIT = 10


def _hidden(lm: LM) -> int:
    return getattr(lm.text_config, "hidden_size", None) or lm.model.get_input_embeddings().weight.shape[1]


def token_bytes(lm: LM) -> float:
    """Bytes a pass keeps for the backward pass per token it runs: its activations in every block."""
    return lm.n_layers * BYTES_PER_UNIT * (_hidden(lm) + lm.width)


def row_bytes(lm: LM, run_tokens: int, context_tokens: int) -> float:
    """Bytes one path row keeps for the backward pass: its activations for `run_tokens` tokens (1 over a
    key/value cache, the whole prompt otherwise) in every block, and over a cache its copy of the keys and
    values of `context_tokens` tokens."""
    cfg, hidden = lm.text_config, _hidden(lm)
    heads = getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", 1)
    head_dim = getattr(cfg, "head_dim", None) or hidden // max(getattr(cfg, "num_attention_heads", 1), 1)
    kv = 2 * 4 * context_tokens * heads * head_dim if run_tokens == 1 else 0  # keys and values, float32
    return run_tokens * token_bytes(lm) + lm.n_layers * kv


def auto_batch(lm: LM, steps: int, run_tokens: int, context_tokens: int) -> int:
    """Path rows per pass so that one pass holds about `BUDGET` for the backward pass, whatever the
    prompt length (`row_bytes`). At least one row; at most every row of the call."""
    return max(1, min(steps * lm.n_layers, int(BUDGET // row_bytes(lm, run_tokens, context_tokens))))
