"""Where wall time goes, by sampling: a thread reads the main thread's Python stack every few
milliseconds and files each sample under the first category (in `CATEGORIES`' order) with code on it.

torch releases the GIL inside its kernels, so a sample taken during a matrix product lands on the Python
line that called it: the category is the kn (or library) function doing the work, at a cost of a few
percent, where `torch.profiler`'s per-operator bookkeeping inflated the time left outside operators.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import Counter

# (category, [(path fragment, function name or "*")]): a sample is the first category any frame matches
CATEGORIES = [
    ("output-layer walks (vocabulary)", [("kn/ig/head.py", "softmax_sums"), ("kn/ig/head.py", "gold_logits"),
                                         ("kn/ig/head.py", "gold_prob_grad_bf16")]),
    ("screen: forward and backward", [("kn/gradxact.py", "*")]),
    ("IG path: backward", [("kn/ig/head.py", "backward")]),
    ("IG path: forward", [("kn/ig/fast.py", "pass_forward"), ("kn/ig/stacked.py", "pass_forward")]),
    ("IG clean runs", [("kn/ig/clean.py", "clean_runs"), ("kn/ig/clean.py", "clean_run")]),
    ("verify: last-token passes", [("kn/probing.py", "_last_token_probs")]),
    ("verify: prefix pass", [("kn/probing.py", "prefix_cache")]),
    ("known filter: model passes", [("kn/probing.py", "_rows_probs"), ("kn/probing.py", "answer_logprobs")]),
    ("tokenization", [("tokenizers", "*"), ("tokenization_utils", "*"), ("kn/tokens.py", "*"),
                      ("kn/data/prepare.py", "*")]),
    ("tables, journal, I/O", [("kn/runs/tables.py", "*"), ("kn/runs/journal.py", "*"), ("kn/runs/engine.py", "write"),
                              ("pandas", "*"), ("pyarrow", "*"), ("json", "*")]),
]
OTHER = "other (Python, bookkeeping)"


def category(stack: list[tuple[str, str]]) -> str:
    """The category of a stack [(file, function)] (`CATEGORIES`; else `OTHER`)."""
    for name, marks in CATEGORIES:
        if any(frag in file and want in ("*", fn) for file, fn in stack for frag, want in marks):
            return name
    return OTHER


class Sampler:
    """with Sampler() as s: ...; then s.shares() {category: share of samples}, s.seconds (wall)."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.counts, self.seconds = interval, Counter(), 0.0
        self._stop, self._main = threading.Event(), threading.main_thread().ident

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            frame, stack = sys._current_frames().get(self._main), []
            while frame is not None:
                stack.append((frame.f_code.co_filename.replace("\\", "/"), frame.f_code.co_name))
                frame = frame.f_back
            self.counts[category(stack)] += 1

    def __enter__(self) -> "Sampler":
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.seconds = time.perf_counter() - self._t0

    def shares(self) -> dict[str, float]:
        n = sum(self.counts.values()) or 1
        return {k: v / n for k, v in self.counts.most_common()}
