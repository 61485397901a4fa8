"""The run loop: relation by relation, each phase's work journaled record by record (kill-safe)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .. import checks
from . import cluster
from . import config as C
from . import tables as T
from .directory import CONFIG, JOURNAL, kind, locked, read_config, start, write_json
from .journal import Journal
from .keyed import resolve
from .phases import Phase, make_phases, new_state
from .result import RunResult
from .settings import RunSettings
from .state import KEY, State, with_legacy_keys

log = logging.getLogger(__name__)

TABLES_EVERY = 60.0  # seconds: the tidy tables are also rewritten this often during a long relation


def run_one(lm, facts, out_dir, settings: RunSettings, *, progress: bool = True, resume: bool = True,
            engine=None) -> RunResult:
    """`kn.run` in one language, its arguments checked (`kn.runs.api.run`); engine: None or "local"
    (here), or a `kn.runs.Ray`."""
    ray = engine if isinstance(engine, cluster.Ray) else None
    selected = [f for f in facts if f.has(settings.language)]
    if not selected:
        raise checks.ArgumentError(f"none of the {len(facts)} facts has a {settings.language!r} version; pass "
                                   f"language= one of {', '.join(sorted({l for f in facts for l in f.languages}))}")
    if len(selected) < len(facts):
        log.info("%d of %d facts have no %r version; left out", len(facts) - len(selected), len(facts),
                 settings.language)
    config = C.make(lm, facts, selected, settings)
    out = resolve(out_dir, config)
    if kind(out) == "multilingual":
        raise checks.ArgumentError(f"{out} holds a multilingual run; pass its languages= to resume it, or "
                                   "choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    phases = make_phases(settings)
    with locked(out):
        start(out, config, resume)
        stored = read_config(out)
        if C.differences(C.comparable(config), C.comparable(C.upgrade(stored))) or \
                config["kn_version"] != stored.get("kn_version"):  # other phase settings, or a newer kn
            changed = C.phase_differences(config, stored)
            if changed:
                log.warning("%s: the phases' settings changed; what they invalidate is recomputed (the journal keeps "
                            "the old records, config.json their settings under \"history\"):\n  %s", out,
                            "\n  ".join(changed))
            write_json(out / CONFIG, C.resumed(config, stored, _now()))
        legacy = C.legacy_keys(read_config(out))
        journal = Journal(out / JOURNAL)
        records = with_legacy_keys(journal.read(), legacy)
        try:
            if ray is None:
                _work(lm, selected, phases, new_state(phases, records), journal, out, progress, records, None)
            else:
                with cluster.Pool(ray, lm, settings, selected) as pool:
                    _work(lm, selected, phases, new_state(phases, records), journal, out, progress, records, pool)
        finally:
            journal.close()
        # the final tables come from the journal as it stands on disk
        tables = T.build(new_state(phases, with_legacy_keys(journal.read(), legacy)), phases)
        T.write(out, tables)
    return RunResult(out, read_config(out), tables)


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _work(lm, selected: Sequence, phases: list[Phase], state: State, journal: Journal, out: Path,
          progress: bool, records: list, pool) -> None:
    """The run loop; `records`: the journal's records (appended to as it journals); `pool`: a
    `kn.runs.cluster.Pool` doing the per-fact work, or None (here)."""
    root = phases[0]
    for p in phases:
        p.start(lm, selected)
    done = sum(state.has(root.fact_record, f.fact_id) for f in selected)
    if done:
        log.info("resuming: %d of %d facts already %sd", done, len(selected), root.name)
    writer = _Writer(out, state, phases, records)
    with tqdm(total=len(selected), initial=done, desc="facts", unit="fact", disable=not progress) as bar:
        for relation, rel_facts in _grouped(selected).items():
            if all(_finished(p, relation, rel_facts, state) for p in phases):
                continue  # finished before a restart
            for p in phases:
                bar.set_postfix_str(relation if p is root else f"{relation}: {p.name}")
                todo = _todo(p, rel_facts, state)
                done = (p.run_fact(lm, f, state) for f in todo) if pool is None else pool.map(p.name, todo, records)
                for rec in done:
                    writer.add(journal, {**rec, KEY: p.fact_key})
                    if p is root:
                        bar.update()
                if p.relation_record and not state.has(p.relation_record, relation):
                    writer.add(journal, {**p.run_relation(lm, relation, rel_facts, state), KEY: p.relation_key})
            writer.write()  # tidy results as we go


def _todo(p: Phase, facts: Sequence, state: State) -> list:
    if not p.fact_record:
        return []
    return [f for f in facts if not state.has(p.fact_record, f.fact_id) and p.wants(f.fact_id, state)]


def _finished(p: Phase, relation: str, facts: Sequence, state: State) -> bool:
    return not _todo(p, facts, state) and (not p.relation_record or state.has(p.relation_record, relation))


def _grouped(facts: Sequence) -> dict[str, list]:
    groups: dict[str, list] = {}
    for f in facts:
        groups.setdefault(f.relation, []).append(f)
    return groups


class _Writer:
    """Journals records into the state, rewriting the tables at most every TABLES_EVERY seconds."""

    def __init__(self, out: Path, state: State, phases: list[Phase], records: list):
        self.out, self.state, self.phases, self.records = out, state, phases, records
        self.last = time.monotonic()

    def add(self, journal: Journal, record: dict) -> None:
        journal.append(record)
        self.state.add(record)
        self.records.append(record)
        if time.monotonic() - self.last > TABLES_EVERY:
            self.write()

    def write(self) -> None:
        T.write(self.out, T.build(self.state, self.phases))
        self.last = time.monotonic()
