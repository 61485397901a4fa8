"""Shared output-layer walks: forward passes stopped at the output layer wait in a queue, and one walk
over the vocabulary (`head.cotangents`) gives the cotangents of all their rows before each runs its
backward pass. Walking the vocabulary costs about as much for a few rows as for dozens, so the passes of
several answer tokens and prompts share it.

The queue holds each waiting pass's autograd graph, so it is walked before a pass would take it over
`max_rows` rows or `budget` bytes (`plan.row_bytes` estimates); `max_rows=0` walks every pass alone; `dtype`:
the walk's products (`head.GRADS`).
"""
from __future__ import annotations

from typing import Callable

from ..models import LM
from .head import AtHead, cotangents
from .plan import BUDGET

MAX_ROWS = 256  # rows per shared walk (and per stacked pass, `kn.ig.stacked`): past a few dozen rows a walk costs
# about linearly more, but a stack of more path rows runs its products faster


class Walks:
    """A queue of passes stopped at the output layer (`AtHead`), walked together."""

    def __init__(self, lm: LM, max_rows: int = MAX_ROWS, budget: float = BUDGET, dtype: str = "float32"):
        self.lm, self.max_rows, self.budget, self.dtype = lm, max_rows, budget, dtype
        self._queue: list[tuple[AtHead, Callable]] = []
        self._rows, self._bytes = 0, 0.0

    def add(self, forward: Callable[[], AtHead], done: Callable[[tuple], None], rows: int, nbytes: float) -> None:
        """Run `forward` (walking the queue first if its `rows` or `nbytes` would not fit) and queue the
        pass; at its walk, done(grads) gets its leaves' gradients of P(gold)."""
        if self._queue and (self._rows + rows > self.max_rows or self._bytes + nbytes > self.budget):
            self.flush()
        self._queue.append((forward(), done))
        self._rows += rows
        self._bytes += nbytes

    def flush(self) -> None:
        """Walk the queued passes' rows once, then run each one's backward pass and `done`, in queue order."""
        queue, self._queue, self._rows, self._bytes = self._queue, [], 0, 0.0
        if not queue:
            return
        for (at, done), cot in zip(queue, cotangents(self.lm, [at for at, _ in queue], self.dtype)):
            done(at.backward(cot))
