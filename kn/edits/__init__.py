"""Knowledge editing methods behind one interface (issue 30).

    with kn.edits.edit(lm, "rome", [Request(("The capital of France is",), " Paris", " Rome", "France")]):
        ...   # the model reads Rome; bit-identical again after the block

A method is a frozen dataclass of its settings in a module of its own, registered once here:
`dai` (the paper's value-slot update), `scale` (activations x0 / x2), `ft` (FT-L), `rome` (rank-one
update; its layer given or chosen by causal tracing, `kn.edits.tracing`), `kn-opt` (optimised value
slots of the fact's knowledge neurons). `kn.edits.metrics` measures an edit the way the field does.
"""
from __future__ import annotations

from .base import METHODS, NEURON_SETS, Method, Request, check_requests, edit, method, register, uses_neurons
from .dai import Dai
from .ft import FT
from .knopt import KNOpt
from .rome import ROME
from .scale import Scale
from .tracing import Trace, causal_trace

for _m in (Dai, Scale, FT, ROME, KNOpt):
    register(_m)

__all__ = ["FT", "METHODS", "NEURON_SETS", "Dai", "KNOpt", "Method", "ROME", "Request", "Scale", "Trace", "causal_trace",
           "check_requests", "edit", "method", "register", "uses_neurons"]
