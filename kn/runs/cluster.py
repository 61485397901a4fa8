"""Running a run's per-fact work on a Ray cluster (`kn.run(..., engine="ray")`).

The driver stays the run loop of `kn.runs.engine` and the only writer of the journal; only the per-fact
work of each phase (`Phase.run_fact`) goes to workers. A worker is a Ray actor that loads the model
once, by the name or path `kn.load` was given, builds the run's phases and keeps its own copy of the
run's state: each task carries the journal records the worker has not seen yet.

Order and faults: each step's facts are handed out to free workers, at most `2 x workers` ahead of the
first unfinished one; results are journaled in the facts' order (a result ready early waits in
memory), so the journal and the tables equal the local engine's. A worker whose process dies has its
fact handed to a fresh worker (up to `retries` times per fact); a fact whose work raises fails the
run as it would locally (a phase records a fact's own errors in its record, and those are not
retried); the driver killed and restarted resumes from the journal, as any run.

Edges: connecting to a cluster at `address` gives up after `connect_timeout` seconds (default 30) with
the address in the message; the workers must fit the cluster's CPUs (`workers x num_cpus`; a cluster
started for the run has this machine's), or the run is refused before any starts; a worker that
cannot start (the model does not load, an import fails) stops the run with the worker's own error;
the workers, and the local cluster this run started, are stopped however the run ends (an error, a
KeyboardInterrupt).
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Sequence

from .. import allocator, checks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ray:
    """How a run uses Ray: `workers` actors of `num_cpus` CPUs (torch threads) and `num_gpus` GPUs
    each, on the cluster at `address` (None: a local one started for the run, and stopped after it;
    "auto": the cluster this machine belongs to), the model on `device` in each ("cuda" with
    num_gpus=1), and how many times a fact is handed to a fresh worker when its worker dies."""

    workers: int = 2
    address: str | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    device: str | None = None
    retries: int = 3
    connect_timeout: float = 30.0

    def __post_init__(self):
        checks.integer(self.workers, "workers", low=1)
        checks.number(self.num_cpus, "num_cpus", low=0.0)
        checks.number(self.num_gpus, "num_gpus", low=0.0)
        checks.integer(self.retries, "retries", low=0)
        checks.number(self.connect_timeout, "connect_timeout", low=0.1)
        if self.address is not None:
            checks.text(self.address, "address")

    def cpus_needed(self) -> float:
        """The CPUs the workers take: workers x num_cpus (a worker of num_cpus=0 still counts as 1)."""
        return self.workers * (self.num_cpus if self.num_cpus > 0 else 1)


def check_fits(engine: Ray, cpus: float, where: str) -> None:
    """Refuse more workers than the cluster's CPUs hold, naming both and the fix."""
    if engine.cpus_needed() > cpus:
        per = engine.num_cpus if engine.num_cpus > 0 else 1
        most = max(1, int(cpus // per))
        raise checks.ArgumentError(
            f"workers={engine.workers} x num_cpus={engine.num_cpus:g} need {engine.cpus_needed():g} CPUs and {where} "
            f"has {cpus:g}; each worker loads the model, so pass workers <= {most}")


def _fits_here(engine: Ray) -> Ray:
    """A local Ray to be started for the run must fit this machine's CPUs: checked before anything is
    written or started (a cluster's own CPUs are checked once connected)."""
    ray = sys.modules.get("ray")
    if engine.address is None and not (ray is not None and ray.is_initialized()):
        check_fits(engine, os.cpu_count() or 1, "this machine")
    return engine


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a "host:port" address; None for "auto", "ray://..." and the like (Ray resolves those)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or "/" in address or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def reachable(address: str, timeout: float) -> None:
    """Raise a clear error unless something accepts a connection at a "host:port" address within `timeout` s."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout):
            pass
    except OSError as err:
        raise checks.ArgumentError(
            f"no Ray cluster answers at address={address!r} (within {timeout:g} s: {err.strerror or err}); start "
            "one there (ray start --head --port=PORT), pass the address `ray start` printed, or leave address out "
            "to start a local one for the run") from None


def resolve(engine, workers=None, address=None) -> Ray | None:
    """None for the local engine, else the `Ray` settings `kn.run`'s engine / workers / address mean."""
    if engine in (None, "local"):
        if workers is not None or address is not None:
            raise checks.ArgumentError("workers= and address= belong to engine='ray'; the local engine runs here")
        return None
    if engine == "ray":
        return _fits_here(Ray(**{k: v for k, v in (("workers", workers), ("address", address)) if v is not None}))
    if isinstance(engine, Ray):
        if workers is not None or address is not None:
            raise checks.ArgumentError("pass workers / address inside kn.runs.Ray(...), or with engine='ray'")
        return _fits_here(engine)
    raise checks.ArgumentError(f"engine must be 'local', 'ray' or a kn.runs.Ray(...), got {engine!r}")


def source_of(lm) -> dict:
    """What a worker loads (`LM.source`), or a clear error for a model built in memory."""
    src = getattr(lm, "source", None)
    if not src:
        raise checks.ArgumentError(
            f"engine='ray' loads the model in every worker by name or path, and {lm.name!r} was built in memory "
            "(kn.wrap). Save it (lm.model.save_pretrained(DIR); lm.tokenizer.save_pretrained(DIR)) and pass "
            "kn.load(DIR), or use a packaged model or hub id")
    return src


class _Worker:
    """A Ray actor: the model, the run's phases and a copy of its state."""

    def __init__(self, source: dict, device, threads: int, settings, facts: Sequence, keep_freed_memory: bool):
        self.error = None
        try:  # a start-up error is kept and told (`ready`), not lost in Ray's "actor died"
            self._start(source, device, threads, settings, facts, keep_freed_memory)
        except Exception as err:  # noqa: BLE001
            self.error = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-3)}"

    def _start(self, source, device, threads, settings, facts, keep_freed_memory) -> None:
        import torch

        from ..models import load
        from .phases import make_phases, new_state

        torch.set_num_threads(max(1, int(threads)))
        if keep_freed_memory:  # as the driver does (kn.allocator)
            allocator.keep_freed_memory()
        self.lm = load(source["name_or_path"], device=device, dtype=getattr(torch, source["dtype"]))
        self.phases = {p.name: p for p in make_phases(settings)}
        for p in self.phases.values():
            p.start(self.lm, facts)
        self.facts = {f.fact_id: f for f in facts}
        self.state = new_state(list(self.phases.values()), languages=settings.languages)

    def ready(self) -> str | None:
        """None once started, else the start-up error (its type, message and last frames)."""
        return self.error

    def run(self, phase: str, language: str, fact_id: str, records: list) -> tuple[dict, int, float]:
        """(the record of `phase` for the fact in `language`, this process's pid, seconds), after taking
        in `records`."""
        if self.error:
            raise WorkerStartError(self.error)
        for r in records:
            self.state.add(r)
        t0 = time.perf_counter()
        rec = self.phases[phase].run_fact(self.lm, self.facts[fact_id], self.state.lang(language))
        return rec, os.getpid(), time.perf_counter() - t0


class WorkerStartError(ChildProcessError):
    """A Ray worker could not start (its model did not load, an import failed): the worker's own error
    (an OSError, as `kn run` reports it: one line, exit 2)."""


class _Slot:
    def __init__(self, handle):
        self.handle, self.seen = handle, 0


class Pool:
    """The workers of one run (`map` hands out one phase's facts); a context manager that stops them,
    and the local cluster it started."""

    def __init__(self, engine: Ray, lm, settings, facts: Sequence):
        try:
            import ray
        except ImportError:
            raise checks.ArgumentError("engine='ray' needs Ray: pip install 'kn[ray]' (or pip install ray)") from None
        self.ray, self.engine = ray, engine
        self.source = source_of(lm)
        self.started = not ray.is_initialized()
        self.slots: list[_Slot] = []
        self.done: dict[int, list[float]] = {}
        if self.started:
            if engine.address is None:
                check_fits(engine, os.cpu_count() or 1, "this machine")
            else:
                reachable(engine.address, engine.connect_timeout)
        try:
            if self.started:
                kw = ({"num_cpus": max(1, int(round(engine.cpus_needed())))} if engine.address is None else {})
                ray.init(address=engine.address, include_dashboard=False, logging_level=logging.WARNING, **kw)
            check_fits(engine, ray.cluster_resources().get("CPU", 0), f"the Ray cluster{self._at()}")
            self.args = (self.source, engine.device, max(1, int(engine.num_cpus)), settings, list(facts),
                         allocator.kept())
            self.remote = ray.remote(num_cpus=engine.num_cpus, num_gpus=engine.num_gpus, max_restarts=0)(_Worker)
            self.slots = [self._new() for _ in range(engine.workers)]
            self._wait_ready(self.slots)
        except BaseException:  # an error or Ctrl-C while starting: nothing of this run left running
            self.close()
            raise

    def _at(self) -> str:
        return f" at {self.engine.address}" if self.engine.address else ""

    def _wait_ready(self, slots: Sequence[_Slot]) -> None:
        """Wait until every worker has loaded the model; the first start-up error stops the run with its message."""
        for slot in slots:
            try:
                error = self.ray.get(slot.handle.ready.remote())
            except self.ray.exceptions.RayActorError as err:
                raise WorkerStartError(f"a Ray worker died while starting (loading {self.source['name_or_path']!r}): "
                                       f"{err}") from None
            if error:
                raise WorkerStartError(f"a Ray worker could not start (loading {self.source['name_or_path']!r}): "
                                       f"{error}")

    def _new(self) -> _Slot:
        return _Slot(self.remote.remote(*self.args))

    def map(self, phase: str, language: str, facts: Sequence, records: list) -> Iterator[dict]:
        """The records of `phase` for `facts` in `language`, in their order; `records`: the run's journal records so
        far (the driver appends as it journals; workers get what they lack with each task)."""
        ray = self.ray
        todo = deque(enumerate(facts))
        free = list(self.slots)
        pending: dict = {}
        ready: dict[int, dict] = {}
        tries: dict[int, int] = {}
        nxt, ahead = 0, 2 * len(self.slots)
        while nxt < len(facts):
            while free and todo and todo[0][0] < nxt + ahead:
                i, f = todo.popleft()
                slot = free.pop()
                delta, slot.seen = records[slot.seen:], len(records)
                pending[slot.handle.run.remote(phase, language, f.fact_id, delta)] = (i, f, slot)
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i, f, slot = pending.pop(ref)
            try:
                rec, pid, seconds = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                tries[i] = tries.get(i, 0) + 1
                if tries[i] > self.engine.retries:
                    raise RuntimeError(f"fact {f.fact_id}: its worker died {tries[i]} times ({err}); "
                                       "stopping (the journal keeps what is done; rerun to resume)") from err
                log.warning("a worker died during fact %s (%s); handing it to a fresh worker",
                            f.fact_id, type(err).__name__)
                self.slots[self.slots.index(slot)] = slot = self._new()
                self._wait_ready([slot])
                todo.appendleft((i, f))
            except ray.exceptions.RayTaskError as err:
                raise err.as_instanceof_cause() from None
            else:
                ready[i] = rec
                self.done.setdefault(pid, []).append(seconds)
            free.append(slot)
            while nxt in ready:
                yield ready.pop(nxt)
                nxt += 1

    def throughput(self) -> str:
        """Per worker process: facts done and seconds per fact."""
        return "; ".join(f"worker {pid}: {len(s)} facts, {sum(s) / len(s):.2f} s/fact"
                         for pid, s in sorted(self.done.items()))

    def close(self) -> None:
        """Kill the workers and stop the local cluster this run started (also after a failure)."""
        try:
            for s in self.slots:
                try:
                    self.ray.kill(s.handle)
                except Exception:  # noqa: BLE001  (already dead)
                    pass
            if self.done:
                log.info("ray workers: %s", self.throughput())
        finally:
            if self.started and self.ray.is_initialized():
                self.ray.shutdown()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
