"""Several single edits read side by side in one batch: row r of a pass reads the model as edit r left
it. An edit that only writes value slots (`Method.writes_slots`) is its change of each layer's slots
(`slot_deltas`, taken inside the edit); one that scales neurons' activations is the same change of their
slots, at the positions it scales (`Method.as_row`). `per_row` adds row r's change at the FFN output of
its rows alone, so the unedited weights are read once for every row (what a CPU decode step mostly costs)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..hooks import hooked
from ..interventions import answer_where
from ..models import LM


@dataclass(frozen=True)
class Row:
    """One edit as a row of `per_row`. changes: {layer: (neurons [k], the change of their value slots
    [k, hidden])}; answer_only: the change acts at the answer positions alone (those `scaled` acts at with
    positions="answer": `kn.interventions.answer_rows` where in force, else each pass's last position),
    else at every position."""

    changes: dict
    answer_only: bool = False


def slots_of(lm: LM) -> dict[int, torch.Tensor]:
    """A copy of every layer's value slots [width, hidden]: what `slot_deltas` compares with."""
    return {l: lm.value_slots(l).detach().clone() for l in range(lm.n_layers)}


def slot_deltas(lm: LM, before: dict[int, torch.Tensor]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{layer: (the neurons whose slots changed [k], their change [k, hidden])} against `before`
    (`slots_of` the unedited model), the layers an edit in force wrote."""
    out = {}
    with torch.no_grad():
        for l, old in before.items():
            d = lm.value_slots(l) - old
            rows = d.abs().sum(1).nonzero()[:, 0]
            if len(rows):
                out[l] = (rows, d[rows].clone())
    return out


@contextmanager
def per_row(lm: LM, deltas: Sequence[Row | dict[int, tuple[torch.Tensor, torch.Tensor]]]) -> Iterator[None]:
    """Inside, every pass is a batch of len(deltas) rows, row r read with `deltas[r]` (a `Row`, or its
    changes at every position: `slot_deltas`; {} for the unedited model) added to its value slots."""
    deltas = [d if isinstance(d, Row) else Row(d) for d in deltas]
    n, flat = len(deltas), lm.family.flat_ffn
    layers = sorted({l for d in deltas for l in d.changes})

    def make(layer: int):
        rows = [(r, d.changes[layer], d.answer_only) for r, d in enumerate(deltas) if layer in d.changes]

        def fn(module, args, output):
            if seen["batch"] != n:
                raise RuntimeError(f"per_row holds {n} edits, but a pass of {seen['batch']} rows ran inside it")
            act = args[0]
            if flat:  # [batch * seq, width], batch-major
                act = act.reshape(n, -1, act.shape[-1])
            out = output.reshape(n, -1, output.shape[-1]).clone() if flat else output.clone()
            where = answer_where(act.shape[:2]) if any(a for *_, a in rows) else None
            for r, (index, delta), answer_only in rows:
                at = where[r].to(act.device) if answer_only else slice(None)
                out[r, at] += (act[r, at][..., index.to(act.device)] @ delta.to(act.dtype)).to(out.dtype)
            return out.reshape(output.shape)
        return fn

    seen: dict = {}

    def batch(module, args, kwargs):  # the pass's rows, whatever shape the FFN sees
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen["batch"] = (ids if ids is not None else kwargs["inputs_embeds"]).shape[0]

    with hooked([(lm.model, "pre", batch)] + [(lm.down_proj(l), "post", make(l)) for l in layers]):
        yield
