"""The screen of a two-stage locate (`kn.IG(screen=k)`): which layers IG runs on, from one cheap score
matrix (gradient x activation, `kn.gradxact`) over every layer given.

A layer's screen score is its row's largest positive score (0 if none is positive): a knowledge
neuron is one neuron with a large positive attribution, wherever the rest of its layer is.
"""
from __future__ import annotations

import torch


def top_layers(scores: torch.Tensor, layers: list[int], k: int) -> list[int]:
    """The `k` of `layers` whose rows of `scores` [n_layers, width] peak highest (largest positive
    entry; ties: the lower layer first), ascending; every layer of `layers` if k >= len(layers)."""
    peak = scores[layers].float().clamp(min=0).amax(1).tolist()  # [len(layers)]
    ranked = sorted(range(len(layers)), key=lambda i: (-peak[i], layers[i]))
    return sorted(layers[i] for i in ranked[:k])
