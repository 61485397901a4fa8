"""Suppress or amplify neurons while a block runs (Dai et al. 2022, section 4.2)."""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Callable, Iterable, Iterator

import torch

from . import checks
from .hooks import hooked, input_ids_hook, site_hooks
from .models import LM
from .neuron import Neuron

SUPPRESS_FACTOR = 0.0  # what `suppress` multiplies a neuron's activation by (Dai et al. 2022, 4.2)
AMPLIFY_FACTOR = 2.0  # `amplify`'s default factor (the paper doubles the activation)

# [batch, seq] bool: each row's own answer position(s) in a padded batch (set by `answer_rows`); None:
# a causal LM's answer position is the last one (every row ends at its answer, as `kn.tokens.targets`)
_ANSWER_ROWS: ContextVar[torch.Tensor | None] = ContextVar("kn_answer_rows", default=None)


@contextmanager
def answer_rows(where: torch.Tensor) -> Iterator[None]:
    """Inside the block, `scaled(..., positions="answer")` acts at `where` [batch, seq] (bool) in a
    causal LM instead of the last position: a right-padded batch whose rows end at different lengths
    (`kn.probing.batch_stats`). Every forward pass inside must have that [batch, seq] shape. A `scaled`
    entered inside the block keeps `where` for its whole block, even inside a later `answer_rows`: each
    of several conditions then acts on its own rows of one pass (`kn.probing.batch_stats_under`)."""
    token = _ANSWER_ROWS.set(where)
    try:
        yield
    finally:
        _ANSWER_ROWS.reset(token)


def answer_where(shape: tuple[int, int]) -> torch.Tensor:
    """[batch, seq] bool: a causal LM's answer positions in a pass of that shape, as `scaled` reads them
    (the `answer_rows` in force, else the last position of every row)."""
    rows = _ANSWER_ROWS.get()
    if rows is not None:
        return _fits(rows, shape)
    where = torch.zeros(tuple(shape), dtype=torch.bool)
    where[:, -1] = True
    return where


def _fits(rows: torch.Tensor, shape) -> torch.Tensor:
    """`rows` (answer_rows' where), checked against the [batch, seq] shape of the pass it acts in."""
    if tuple(rows.shape) != tuple(shape):
        raise RuntimeError(f"answer_rows were set for a [batch, seq] = {list(rows.shape)} pass, but the "
                           f"site has {list(shape)}")
    return rows


def stackable(factory: Callable[[], AbstractContextManager]) -> Callable[[], AbstractContextManager]:
    """`factory` declared row-stackable for `kn.probing.batch_stats_under`: every context it makes changes
    the model only at the answer positions in force when it is entered (`scaled`, positions="answer"),
    so conditions entered each inside its own `answer_rows` block share one pass. Not a weight edit nor
    positions="all": those would act on every condition's rows."""
    def make():
        return factory()
    make.row_stackable = True
    return make


def is_stackable(factory) -> bool:
    """Whether a condition factory may share a pass with others: `nullcontext` (changes nothing) or
    declared with `stackable`."""
    return factory is nullcontext or getattr(factory, "row_stackable", False) is True


def rows_at(width: int, at: torch.Tensor) -> torch.Tensor:
    """[len(at), width] bool, True at position at[r] of row r: what `answer_rows` takes for a batch whose
    rows each predict at one position of their own."""
    where = torch.zeros((len(at), width), dtype=torch.bool, device=at.device)
    where[torch.arange(len(at), device=at.device), at] = True
    return where


def check_neurons(lm: LM, neurons: Iterable[Neuron]) -> dict[int, list[int]]:
    """Neurons grouped by layer {layer: [index, ...]}, read once, duplicates dropped, with a clear
    error for anything that is not an in-range (layer, index) pair (`kn.checks.by_layer`)."""
    return checks.by_layer(lm, neurons)


@contextmanager
def scaled(lm: LM, neurons: Iterable[Neuron], factor: float, positions: str = "answer") -> Iterator[None]:
    """Multiply the neurons' activations by `factor` in every forward pass inside the block.

    positions: "answer" (the answer-predicting position: the [MASK] tokens of a masked LM, the last
    position of a causal LM, or each row's own positions inside `answer_rows`: those in force when
    the block is entered, else those of the pass) or "all". All layers act in one pass; hooks are
    removed on exit.
    """
    if positions not in ("answer", "all"):
        raise checks.ArgumentError(f"positions must be 'answer' or 'all', got {positions!r}")
    factor = checks.number(factor, "factor")
    by_layer = {l: torch.tensor(ix) for l, ix in check_neurons(lm, neurons).items()}
    seen: dict = {}
    mask_id = lm.tokenizer.mask_token_id if lm.masked else None
    entered = _ANSWER_ROWS.get()

    def edit(layer, act):
        act = act.clone()
        ix = by_layer[layer].to(act.device)
        if positions == "all":
            act[..., ix] *= factor
        elif lm.masked:
            act[answer_positions(seen["ids"] == mask_id, act)] *= scale(ix, act)
        elif (rows := entered if entered is not None else _ANSWER_ROWS.get()) is not None:
            act[_fits(rows, act.shape[:2]).to(act.device)] *= scale(ix, act)
        else:
            act[:, -1, ix] *= factor
        return act

    def scale(ix, act):
        s = torch.ones(act.shape[-1], dtype=act.dtype, device=act.device)
        s[ix] = factor
        return s

    with hooked([input_ids_hook(lm, seen)] + site_hooks(lm, edit, list(by_layer))):
        yield


def answer_positions(is_mask: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """[batch, seq] bool: where a masked LM's site `act` [batch, seq, width] is at an answer ([MASK])
    position, from the pass's input ids' mask `is_mask` [b, s]. The fast IG path runs rows that share
    one prompt (b = 1 for a larger batch) and may pass only the answer position on (seq = 1)."""
    if act.shape[1] != is_mask.shape[1]:
        return torch.ones(act.shape[:2], dtype=torch.bool, device=act.device)  # the answer position alone
    return is_mask.to(act.device).expand(act.shape[0], -1) if is_mask.shape[0] != act.shape[0] else is_mask


def suppress(lm: LM, neurons: Iterable[Neuron], positions: str = "answer"):
    """Set the neurons to 0 (`SUPPRESS_FACTOR`) inside the block."""
    return scaled(lm, neurons, SUPPRESS_FACTOR, positions)


def amplify(lm: LM, neurons: Iterable[Neuron], factor: float = AMPLIFY_FACTOR, positions: str = "answer"):
    """Multiply the neurons by `factor` (default `AMPLIFY_FACTOR`, 2) inside the block."""
    return scaled(lm, neurons, factor, positions)
