"""The run loop: relation by relation, each phase's work journaled record by record (kill-safe)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .. import checks
from ..data.prepare import prepare_fact
from ..provenance import now
from . import cluster
from . import config as C
from . import sessions
from . import tables as T
from .directory import CONFIG, JOURNAL, kind, locked, read_config, start, write_json
from .journal import Journal
from .keyed import resolve
from .phases import Phase, make_phases, new_state
from .result import RunResult
from .settings import RunSettings
from .state import ALL, KEY, LANGUAGE, State, with_legacy_keys

log = logging.getLogger(__name__)

TABLES_EVERY = 60.0  # seconds: the tidy tables are also rewritten this often during a long relation


def run_one(lm, facts, out_dir, settings: RunSettings, *, progress: bool = True, resume: bool = True,
            engine=None, command: str | None = None) -> RunResult:
    """`kn.run`, its arguments checked (`kn.runs.api.run`): the facts with a version in every language
    of the settings, each (fact, language) a unit of work. engine: None or "local" (here), or a
    `kn.runs.Ray`; command: what started it, for its sessions (`kn.runs.sessions`)."""
    ray = engine if isinstance(engine, cluster.Ray) else None
    langs = settings.languages
    selected = [f for f in facts if all(f.has(l) for l in langs)]
    if not selected:
        have = ", ".join(sorted({l for f in facts for l in f.languages}))
        raise checks.ArgumentError(f"none of the {len(facts)} facts has a version in {' and '.join(map(repr, langs))}; "
                                   f"pass language= / languages= of {have}")
    if len(selected) < len(facts):
        log.info("%d of %d facts lack a version in %s; left out", len(facts) - len(selected), len(facts),
                 ", ".join(langs))
    check_usable(lm, selected, settings)
    config = C.make(lm, facts, selected, settings)
    out = resolve(out_dir, config)
    if kind(out) == "multilingual":
        raise checks.ArgumentError(f"{out} holds a multilingual run of an older kn (one directory per language): "
                                   "kn.load_run reads it; choose another directory for a new run")
    out.mkdir(parents=True, exist_ok=True)
    phases = make_phases(settings)
    with locked(out):
        start(out, config, resume)
        _reconcile(out, config)
        legacy = C.legacy_keys(read_config(out))
        t0 = sessions.begin(out, command)
        journal = Journal(out / JOURNAL)
        records = with_legacy_keys(journal.read(), legacy)
        try:
            if ray is None:
                _work(lm, selected, phases, new_state(phases, records, langs), journal, out, progress, records, None)
            else:
                with cluster.Pool(ray, lm, settings, selected) as pool:
                    _work(lm, selected, phases, new_state(phases, records, langs), journal, out, progress, records,
                          pool)
        except BaseException:  # Ctrl-C, SIGTERM (the CLI's), an error: the session's seconds are kept
            sessions.end(out, t0, interrupted=True)
            raise
        finally:
            journal.close()
        # the final tables come from the journal as it stands on disk
        tables = T.build(new_state(phases, with_legacy_keys(journal.read(), legacy), langs), phases)
        T.write(out, tables)
        sessions.end(out, t0)
    return RunResult(out, read_config(out), tables)


def check_usable(lm, selected: Sequence, settings: RunSettings) -> None:
    """Refuse a run in several languages in which no fact can be asked of `lm` in every one (the units of
    some language would only record errors, and nothing is comparable across languages), saying per
    language how many facts are usable and why not the others; otherwise, where some fact is not usable
    somewhere, say the same as a warning and go on (those units record their error)."""
    from ..data.select import explain, language_counts

    if "locate" not in settings.phases:
        return
    sentence = settings.of("locate").sentence
    langs = settings.languages
    prepared = {l: [prepare_fact(f, lm, l, sentence=sentence) for f in selected] for l in langs}
    everywhere = sum(all(prepared[l][i] is not None and prepared[l][i].usable for l in langs)
                     for i in range(len(selected)))
    if everywhere == len(selected):
        return
    counts = language_counts(selected, lm, langs, sentence=sentence)
    text = explain({"languages": list(langs), "counts": counts, "known": False, "sentence": sentence,
                    "masked": bool(lm.masked), "aligned": len(selected), "selected": everywhere,
                    "what": "usable in every language"})
    if not everywhere and len(langs) > 1:
        raise checks.ArgumentError(f"no fact can be asked of {lm.name} in every one of {', '.join(langs)}: {text}")
    log.warning("%d of %d facts can be asked of %s in every language; the others' units record an error. %s",
                everywhere, len(selected), lm.name, text)


def _reconcile(out: Path, config: dict) -> None:
    """Rewrite the resumed run's config.json when its phases or their settings changed, or kn did (the
    old settings go to its history); a phase added or left out is said quietly, a setting changed loudly."""
    stored = read_config(out)
    if not C.differences(C.comparable(config), C.comparable(C.upgrade(stored))) and \
            config["kn_version"] == stored.get("kn_version"):
        return
    changed = C.phase_differences(config, stored)
    if changed:
        kept = set(C.upgrade(stored)["settings"].get("phases", [])) & set(config["settings"]["phases"])
        loud = any(f"settings.{p}." in c for c in changed for p in kept)
        log.log(logging.WARNING if loud else logging.INFO,
                "%s: the phases or their settings changed; what they invalidate is recomputed (the journal keeps the "
                "old records, config.json their settings under \"history\"):\n  %s", out, "\n  ".join(changed))
    write_json(out / CONFIG, C.resumed(config, stored, now()))


def _work(lm, selected: Sequence, phases: list[Phase], state: State, journal: Journal, out: Path,
          progress: bool, records: list, pool) -> None:
    """The run loop: relation by relation, each phase in each language, its facts then the relation;
    then the phases over every relation or language (`Phase.after_all`, `Phase.every_language`),
    relation by relation; then the phases' groups of facts (`Phase.group_record`). `records`:
    the journal's records (appended to as it journals); `pool`: a `kn.runs.cluster.Pool` doing the
    per-fact work, or None (here)."""
    root = phases[0]
    for p in phases:
        p.start(lm, selected)
    total = len(selected) * len(state.languages)
    done = sum(state.lang(l).has(root.fact_record, f.fact_id) for l in state.languages for f in selected)
    if done:
        log.info("resuming: %d of %d (fact, language) units already %sd", done, total, root.name)
    writer = _Writer(out, state, phases, records)
    late = [p.after_all or p.every_language for p in phases]
    stages = [[p for p, x in zip(phases, late) if not x], [p for p, x in zip(phases, late) if x]]
    with tqdm(total=total, initial=done, desc="facts", unit="fact", disable=not progress) as bar:
        for stage in stages:
            for relation, rel_facts in _grouped(selected).items():
                if all(_finished(p, relation, rel_facts, state) for p in stage):
                    continue  # finished before a restart
                for p in stage:
                    for lang in _languages(p, state):
                        view = state.lang(lang)
                        where = relation + ("" if p is root else f": {p.name}")
                        tail = f" ({lang})" if len(state.languages) > 1 else ""
                        bar.set_postfix_str(where + tail)
                        todo = _todo(p, rel_facts, view)
                        recs = ((p.run_fact(lm, f, view) for f in todo) if pool is None
                                else pool.map(p.name, lang, todo, records))
                        for i, rec in enumerate(recs, 1):
                            writer.add(journal, {**rec, KEY: p.fact_key, LANGUAGE: lang})
                            if p is root:
                                bar.update()
                            else:  # a later phase's facts move no count: say how far it is
                                bar.set_postfix_str(f"{where} {i}/{len(todo)}{tail}")
                        if p.relation_record and not view.has(p.relation_record, relation):
                            writer.add(journal, {**p.run_relation(lm, relation, rel_facts, view), KEY: p.relation_key,
                                                 LANGUAGE: lang})
                writer.write()  # tidy results as we go
        for p in phases:
            for lang in _languages(p, state) if p.group_record else ():
                view = state.lang(lang)
                for group in p.groups(selected, view):
                    if not view.has(p.group_record, group):
                        bar.set_postfix_str(f"{p.name}: {group}" + (f" ({lang})" if len(state.languages) > 1 else ""))
                        writer.add(journal, {**p.run_group(lm, group, selected, view), KEY: p.relation_key,
                                             LANGUAGE: lang})
                writer.write()


def _languages(p: Phase, state: State) -> tuple[str, ...]:
    return (ALL,) if p.every_language else state.languages


def _todo(p: Phase, facts: Sequence, view) -> list:
    if not p.fact_record:
        return []
    return [f for f in facts if not view.has(p.fact_record, f.fact_id) and p.wants(f.fact_id, view)]


def _finished(p: Phase, relation: str, facts: Sequence, state: State) -> bool:
    return all(not _todo(p, facts, v) and (not p.relation_record or v.has(p.relation_record, relation))
               for v in map(state.lang, _languages(p, state)))


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
