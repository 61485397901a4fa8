"""Dataset runs: knowledge neurons located and verified over relations x facts, kill-safe, with tidy
results (Dai et al. 2022, sections 3-4; algorithms.md section 1).

A run lives in one directory:

- ``config.json``: what was run (settings, ``lm.describe()``, the data's name and fingerprint,
  ``kn.__version__``). A run resumes only into a directory whose config is the same.
- ``journal.jsonl``: the source of truth. Append-only, one JSON record per line, each flushed and
  fsynced before the run moves on. A restart reads it, cuts off a torn last line (a kill during a
  write) and skips the work it holds, so no fact is lost or done twice.
- ``facts.parquet``, ``neurons.parquet``, ``relations.parquet``, ``prompts.parquet``: tidy tables,
  rebuilt from the journal after each relation and at the end (`load_run` rebuilds them anywhere).

Two phases. Phase 1, per fact (the expensive one): the coarse neuron set of each prompt and its
P(gold). Phase 2, per relation once all its facts have phase 1: `tune_share` fixes the relation's
share and each fact's knowledge neurons; each fact is then verified (suppress x0, amplify x2) on its
own prompts, on the prompts of a random fact of another relation (the paper's control) and of another
fact of the same relation. Controls are picked by a seeded RNG keyed on the fact id, so a resumed run
equals an uninterrupted one.

Journal records (field "type"):

- ``fact``: fact_id, relation, subject, answer, prompts, sets (per prompt, [[layer, index], ...]),
  p_before (per prompt), seconds; or the same with ``error`` = {type, message}.
- ``relation``: relation, share (None if no fact was located), facts (ids located), neurons
  {fact_id: [[layer, index], ...]}.
- ``verify``: fact_id, relation, fact / other / same = {fact_id, before, suppressed, amplified}
  (per prompt; other / same may be null); or ``error``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from .locate import THRESHOLDS, prompt_sets, shared_counts, tune_share
from .models import LM
from .probing import answer_prob
from .tokens import targets
from .data.select import resolve_relations, select_facts  # noqa: F401  (moved to kn.data.select)
from .verify import effect, ratio_of_means

log = logging.getLogger(__name__)

FORMAT = 1
JOURNAL, CONFIG, LOCK = "journal.jsonl", "config.json", ".lock"
TABLES = ("facts", "neurons", "relations", "prompts")
TABLES_EVERY = 60.0  # seconds: the tidy tables are also rewritten this often during a long relation
RELATION_NEURON_SHARE = 0.1  # relation-level KNs: neurons of >= 10% of the relation's facts (Dai et al.)

FACT_COLUMNS = [
    "fact_id", "relation", "subject", "answer", "n_prompts", "n_coarse", "n_neurons", "share",
    "p_before", "p_suppressed", "p_amplified", "suppression", "amplification",
    *[f"control_{c}_{k}" for c in ("other", "same")
      for k in ("fact", "p_before", "p_suppressed", "p_amplified", "suppression", "amplification")],
    "seconds", "error",
]
NEURON_COLUMNS = ["fact_id", "relation", "layer", "index", "n_prompts_found", "n_facts_sharing"]
PROMPT_COLUMNS = ["fact_id", "relation", "prompt_index", "prompt", "n_coarse", "p_before", "p_suppressed",
                  "p_amplified"]
RELATION_COLUMNS = [
    "relation", "facts", "errors", "facts_located", "facts_with_neurons", "facts_verified",
    "neurons_per_fact", "share", "relation_neurons", "max_facts_sharing", "p_before",
    "suppression", "amplification", "control_other_suppression", "control_other_amplification",
    "control_same_suppression", "control_same_amplification",
]


class RunConfigError(ValueError):
    """The output directory holds a different run (or is not a run directory)."""


# -- the journal ------------------------------------------------------------------------------
class Journal:
    """Append-only JSON lines; every record is flushed and fsynced before `append` returns."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fh = None

    def read(self, repair: bool = True) -> list[dict]:
        """The records in order. A torn last line (no newline, or not JSON) is ignored and, with
        `repair`, cut off the file; an unreadable line in the middle is skipped with a warning."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records, pos, good = [], 0, 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                break  # torn tail: the process died during the write
            line = data[pos:end].strip()
            pos = end + 1
            if not line:
                good = pos
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                if data[pos:].strip():
                    log.warning("%s: skipping an unreadable record at byte %d", self.path, pos)
                    good = pos
                continue
            good = pos
        if good < len(data):
            log.warning("%s: ignoring a torn last record (%d bytes)", self.path, len(data) - good)
            if repair:
                with open(self.path, "r+b") as fh:
                    fh.truncate(good)
                    fh.flush()
                    os.fsync(fh.fileno())
        return records

    def append(self, record: dict) -> None:
        if self._fh is None:
            self._fh = open(self.path, "ab")
        self._fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One writer per run directory (advisory lock; the OS drops it when a killed process dies)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out / LOCK, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunConfigError(f"another process is writing to the run in {out}; wait for it or stop it") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- configuration ----------------------------------------------------------------------------
def _fingerprint(facts) -> str:
    if hasattr(facts, "fingerprint"):
        return facts.fingerprint()
    import hashlib

    h = hashlib.sha256()
    for f in facts:
        h.update(json.dumps(f.to_dict(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def run_config(lm: LM, facts, selected: Sequence, *, language: str, method: str, steps: int,
               threshold: float, share: float, min_prompts: int, controls: bool, seed: int) -> dict:
    """What config.json records (everything but "created" must match for a resume)."""
    from . import __version__

    return {
        "format": FORMAT,
        "kn_version": __version__,
        "settings": {"language": language, "method": method, "steps": steps, "threshold": threshold,
                     "share": share, "min_prompts": min_prompts, "controls": controls, "seed": seed,
                     "suppress_factor": 0.0, "amplify_factor": 2.0, "kns_per_fact": [2, 5], "share_step": 0.05,
                     "share_tries": 6},
        "model": lm.describe(),
        "data": {"name": getattr(facts, "name", ""), "fingerprint": _fingerprint(facts),
                 "n_facts": len(selected), "relations": list(dict.fromkeys(f.relation for f in selected))},
    }


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k == "created" and not path:
                continue
            out += _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [f"{path}: {_short(a)} now, {_short(b)} in the directory"]


def _short(x: Any) -> str:
    s = json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else repr(x)
    return s if len(s) <= 60 else s[:57] + "..."


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _start(out: Path, config: dict, resume: bool) -> None:
    """Write config.json, or check it against the one in `out` (resume), or clear `out` (fresh)."""
    cfg_path, journal = out / CONFIG, out / JOURNAL
    if not resume:
        for name in [CONFIG, JOURNAL, *(f"{t}.parquet" for t in TABLES)]:
            if (out / name).exists():
                log.warning("resume=False: removing %s", out / name)
                (out / name).unlink()
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        new = json.loads(json.dumps(config))  # tuples -> lists, as stored
        diffs = _diff(new, old)
        if diffs:
            raise RunConfigError(
                f"{out} holds a run with a different configuration, so it cannot be resumed:\n  "
                + "\n  ".join(diffs)
                + f"\nRerun with the same model, data and settings to resume it, choose another output "
                  f"directory for a new run, or pass resume=False (CLI: --fresh) to replace it.")
        log.info("resuming the run in %s", out)
    elif journal.exists() and journal.stat().st_size:
        raise RunConfigError(f"{out} has a journal but no {CONFIG}; it is not a kn run directory kn can resume "
                             f"(choose another output directory, or pass resume=False to replace it)")
    else:
        _write_json(cfg_path, {**config, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})


# -- facts --------------------------------------------------------------------------------------
def _grouped(facts: Sequence) -> dict[str, list]:
    groups: dict[str, list] = {}
    for f in facts:
        groups.setdefault(f.relation, []).append(f)
    return groups


def fact_prompts(lm: LM, fact, language: str = "en") -> tuple[list[str], str]:
    """The fact's prompts for `lm` (masked: cloze with [MASK]; causal: object-last prefixes) and its answer."""
    from .data.prepare import prepare_fact

    p = prepare_fact(fact, lm, language)
    if p is None or not p.prompts:
        kind = "masked" if lm.masked else "causal (object-last templates only)"
        raise ValueError(f"fact {fact.fact_id!r} has no {language!r} prompt usable by a {kind} LM")
    return list(p.prompts), p.object


def _error(err: BaseException) -> dict:
    return {"type": type(err).__name__, "message": str(err)}


def _locate_fact(lm: LM, fact, language: str, *, method: str, steps: int, threshold: float,
                 min_prompts: int) -> dict:
    """Phase 1 of one fact: the journal record (with `error` if anything raised)."""
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"type": "fact", "fact_id": fact.fact_id, "relation": fact.relation,
                           "subject": fact.subject.get(language)}
    try:
        prompts, answer = fact_prompts(lm, fact, language)
        rec |= {"answer": answer, "prompts": prompts}
        if len(prompts) < min_prompts:
            raise ValueError(f"{len(prompts)} usable prompt(s), fewer than min_prompts={min_prompts}: "
                             f"no neuron could pass the refinement")
        sets = prompt_sets(lm, prompts, answer, threshold=threshold, method=method, steps=steps)
        rec["sets"] = [sorted([l, i] for l, i in s) for s in sets]
        rec["p_before"] = [answer_prob(lm, p, answer) for p in prompts]
    except Exception as err:  # recorded; the run goes on
        log.warning("fact %s failed: %s: %s", fact.fact_id, type(err).__name__, err)
        rec["error"] = _error(err)
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def _tune(relation: str, recs: list[dict], share: float, min_prompts: int) -> dict:
    """Phase 2a of a relation: the final share and each located fact's knowledge neurons."""
    ok = [r for r in recs if "error" not in r]
    rec: dict[str, Any] = {"type": "relation", "relation": relation, "share": None,
                           "facts": [r["fact_id"] for r in ok], "neurons": {}}
    if ok:
        s, kns = tune_share([[{tuple(n) for n in p} for p in r["sets"]] for r in ok], share,
                            min_prompts=min_prompts)
        rec["share"] = s
        rec["neurons"] = {r["fact_id"]: [list(n) for n in k] for r, k in zip(ok, kns)}
    return rec


class _Controls:
    """Seeded control facts: another relation's (usable by the model) and the same relation's."""

    def __init__(self, lm: LM, facts: Sequence, language: str, seed: int):
        self.lm, self.language, self.seed = lm, language, seed
        self.ids = sorted(f.fact_id for f in facts)
        self.by_id = {f.fact_id: f for f in facts}
        self._usable: dict[str, tuple[list[str], str] | None] = {}

    def prompts(self, fact_id: str) -> tuple[list[str], str] | None:
        if fact_id not in self._usable:
            try:
                prompts, answer = fact_prompts(self.lm, self.by_id[fact_id], self.language)
                targets(self.lm, prompts[0], answer)  # raises for an answer the tokenizer cannot write
                self._usable[fact_id] = (prompts, answer)
            except ValueError:
                self._usable[fact_id] = None
        return self._usable[fact_id]

    def other(self, fact_id: str, relation: str) -> str | None:
        rng = random.Random(f"{self.seed}|other|{fact_id}")
        cands = [i for i in self.ids if self.by_id[i].relation != relation]
        for _ in range(min(len(cands), 64)):  # random draws, then a seeded scan
            c = cands[rng.randrange(len(cands))]
            if self.prompts(c) is not None:
                return c
        rng.shuffle(cands)
        return next((c for c in cands if self.prompts(c) is not None), None)

    def same(self, fact_id: str, located: Sequence[str]) -> str | None:
        cands = sorted(i for i in located if i != fact_id)
        return random.Random(f"{self.seed}|same|{fact_id}").choice(cands) if cands else None


def _effect(lm: LM, prompts: Sequence[str], answer: str, neurons) -> dict:
    e = effect(lm, list(prompts), answer, neurons)
    return {"before": e.before.tolist(), "suppressed": e.suppressed.tolist(), "amplified": e.amplified.tolist()}


def _verify_fact(lm: LM, rec: dict, neurons: list, controls: _Controls | None, located: Sequence[str],
                 by_id: dict[str, dict]) -> dict:
    """Phase 2b of one fact: its verification record."""
    out: dict[str, Any] = {"type": "verify", "fact_id": rec["fact_id"], "relation": rec["relation"]}
    neurons = [tuple(n) for n in neurons]
    try:
        out["fact"] = {"fact_id": rec["fact_id"], **_effect(lm, rec["prompts"], rec["answer"], neurons)}
        out["other"] = out["same"] = None
        if controls is not None:
            o = controls.other(rec["fact_id"], rec["relation"])
            if o is not None:
                prompts, answer = controls.prompts(o)
                out["other"] = {"fact_id": o, **_effect(lm, prompts, answer, neurons)}
            s = controls.same(rec["fact_id"], located)
            if s is not None:
                out["same"] = {"fact_id": s, **_effect(lm, by_id[s]["prompts"], by_id[s]["answer"], neurons)}
    except Exception as err:
        log.warning("verifying %s failed: %s: %s", rec["fact_id"], type(err).__name__, err)
        out = {k: out[k] for k in ("type", "fact_id", "relation")} | {"error": _error(err)}
    return out


# -- tables -------------------------------------------------------------------------------------
@dataclass
class _State:
    facts: dict[str, dict]
    relations: dict[str, dict]
    verified: dict[str, dict]

    @classmethod
    def of(cls, records: Iterable[dict]) -> _State:
        st = cls({}, {}, {})
        where = {"fact": (st.facts, "fact_id"), "relation": (st.relations, "relation"),
                 "verify": (st.verified, "fact_id")}
        for r in records:
            if r.get("type") in where:
                d, key = where[r["type"]]
                d.setdefault(r[key], r)  # first record wins: a duplicate can never count twice
        return st


def _mean(x) -> float:
    return float(np.mean(x)) if x is not None and len(x) else math.nan


def _ratio(before: Sequence[float], after: Sequence[float]) -> float:
    return ratio_of_means(before, after) if len(before) else math.nan


def _tables(st: _State) -> dict:
    import pandas as pd

    facts, neurons, prompts, rels = [], [], [], []
    for fid, r in st.facts.items():
        rel = st.relations.get(r["relation"])
        v = st.verified.get(fid)
        kns = rel["neurons"].get(fid) if rel else None
        err = r.get("error") or (v or {}).get("error")
        sets = r.get("sets")
        row = {"fact_id": fid, "relation": r["relation"], "subject": r.get("subject"), "answer": r.get("answer"),
               "n_prompts": len(r["prompts"]) if "prompts" in r else None,
               "n_coarse": _mean([len(s) for s in sets]) if sets else math.nan,
               "n_neurons": len(kns) if kns is not None else None,
               "share": rel["share"] if rel and kns is not None else math.nan,
               "p_before": _mean(r.get("p_before")), "seconds": r.get("seconds"),
               "error": None if not err else ("verify: " if "error" not in r else "")
               + f"{err['type']}: {err['message']}"}
        eff = (v or {}).get("fact")
        row |= {"p_suppressed": _mean(eff and eff["suppressed"]), "p_amplified": _mean(eff and eff["amplified"]),
                "suppression": _ratio(eff["before"], eff["suppressed"]) if eff else math.nan,
                "amplification": _ratio(eff["before"], eff["amplified"]) if eff else math.nan}
        for c in ("other", "same"):
            e = (v or {}).get(c)
            row |= {f"control_{c}_fact": e and e["fact_id"],
                    f"control_{c}_p_before": _mean(e and e["before"]),
                    f"control_{c}_p_suppressed": _mean(e and e["suppressed"]),
                    f"control_{c}_p_amplified": _mean(e and e["amplified"]),
                    f"control_{c}_suppression": _ratio(e["before"], e["suppressed"]) if e else math.nan,
                    f"control_{c}_amplification": _ratio(e["before"], e["amplified"]) if e else math.nan}
        facts.append(row)
        for j, p in enumerate(r.get("prompts") or []):
            prompts.append({"fact_id": fid, "relation": r["relation"], "prompt_index": j, "prompt": p,
                            "n_coarse": len(sets[j]) if sets else None,
                            "p_before": r["p_before"][j] if "p_before" in r else math.nan,
                            "p_suppressed": eff["suppressed"][j] if eff else math.nan,
                            "p_amplified": eff["amplified"][j] if eff else math.nan})
    for name, rel in st.relations.items():
        kns = rel["neurons"]
        counts = shared_counts([[tuple(n) for n in k] for k in kns.values()])
        for fid, k in kns.items():
            found = [{tuple(n) for n in s} for s in st.facts[fid]["sets"]]
            for l, i in k:
                neurons.append({"fact_id": fid, "relation": name, "layer": l, "index": i,
                                "n_prompts_found": sum((l, i) in s for s in found),
                                "n_facts_sharing": counts[(l, i)]})
    fdf = pd.DataFrame(facts, columns=FACT_COLUMNS)
    for col in ("n_prompts", "n_neurons"):
        fdf[col] = fdf[col].astype("Int64")
    for name, rel in st.relations.items():
        sub = fdf[fdf.relation == name]
        ver = sub[sub.suppression.notna()]
        counts = shared_counts([[tuple(n) for n in k] for k in rel["neurons"].values()])
        n_loc = len(rel["facts"])
        row = {"relation": name, "facts": len(sub), "errors": int(sub.error.notna().sum()),
               "facts_located": n_loc, "facts_with_neurons": sum(1 for k in rel["neurons"].values() if k),
               "facts_verified": len(ver),
               "neurons_per_fact": _mean([len(k) for k in rel["neurons"].values()]),
               "share": rel["share"] if rel["share"] is not None else math.nan,
               "relation_neurons": sum(c >= RELATION_NEURON_SHARE * n_loc for c in counts.values()),
               "max_facts_sharing": max(counts.values(), default=0),
               "p_before": _mean(ver.p_before),
               "suppression": _ratio(ver.p_before, ver.p_suppressed),
               "amplification": _ratio(ver.p_before, ver.p_amplified)}
        for c in ("other", "same"):
            cv = sub[sub[f"control_{c}_suppression"].notna()]
            row[f"control_{c}_suppression"] = _ratio(cv[f"control_{c}_p_before"], cv[f"control_{c}_p_suppressed"])
            row[f"control_{c}_amplification"] = _ratio(cv[f"control_{c}_p_before"], cv[f"control_{c}_p_amplified"])
        rels.append(row)
    return {"facts": fdf, "neurons": pd.DataFrame(neurons, columns=NEURON_COLUMNS),
            "relations": pd.DataFrame(rels, columns=RELATION_COLUMNS),
            "prompts": pd.DataFrame(prompts, columns=PROMPT_COLUMNS)}


def _write_tables(out: Path, tables: dict) -> None:
    for name, df in tables.items():
        tmp = out / f".{name}.parquet.tmp"
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out / f"{name}.parquet")


@dataclass
class RunResult:
    """A run's tidy tables (pandas DataFrames) and its config.

    facts: one row per fact; neurons: one row per (fact, knowledge neuron); relations: one row per
    relation with ratios of means over its verified facts; prompts: one row per (fact, prompt).
    """

    out_dir: Path
    config: dict
    facts: Any
    neurons: Any
    relations: Any
    prompts: Any

    @property
    def complete(self) -> bool:
        """Every fact of the config has a result and every relation has been verified."""
        return (len(self.facts) == self.config["data"]["n_facts"]
                and len(self.relations) == len(self.config["data"]["relations"]))

    def headline(self) -> dict:
        """Unweighted means over relations (the paper's headline numbers)."""
        cols = ["suppression", "amplification", "control_other_suppression", "control_other_amplification",
                "control_same_suppression", "control_same_amplification", "neurons_per_fact", "share"]
        return {c: float(self.relations[c].mean()) if len(self.relations) else math.nan for c in cols}


def load_run(out_dir: str | os.PathLike) -> RunResult:
    """The tables of the run in `out_dir`, rebuilt from its journal (no model needed; read-only)."""
    out = Path(out_dir)
    if not (out / CONFIG).exists():
        raise FileNotFoundError(f"{out} holds no kn run ({CONFIG} missing)")
    config = json.loads((out / CONFIG).read_text(encoding="utf-8"))
    tables = _tables(_State.of(Journal(out / JOURNAL).read(repair=False)))
    return RunResult(out, config, **tables)


# -- the run --------------------------------------------------------------------------------------
def run(lm: LM, facts, out_dir: str | os.PathLike, *, language: str = "en", method: str = "ig", steps: int = 20,
        threshold: float | None = None, share: float = 0.7, min_prompts: int = 3, controls: bool = True,
        seed: int = 0, progress: bool = True, resume: bool = True) -> RunResult:
    """Locate and verify the knowledge neurons of every fact in `facts` (a FactSet or Facts), kill-safe.

    Facts without a `language` version are left out. Per fact, phase 1 finds each prompt's coarse set
    (`method` "ig" with `steps`, or "activation"; coarse filter `threshold`, default 0.2 / 0.5); per
    relation, phase 2 tunes `share` (`tune_share`, floor `min_prompts`), then suppresses / amplifies
    each fact's neurons on its prompts and, with `controls`, on a random fact of another relation and
    of the same relation (chosen by `seed`). Results go to `out_dir` (see the module docstring); an
    interrupted run restarted with the same arguments resumes (`resume=False` replaces it instead).
    A fact that raises is recorded with its error and the run goes on.
    """
    if method not in THRESHOLDS:
        raise ValueError(f"method must be one of {list(THRESHOLDS)}, got {method!r}")
    threshold = THRESHOLDS[method] if threshold is None else float(threshold)
    if not hasattr(facts, "__len__"):
        facts = list(facts)
    selected = [f for f in facts if f.has(language)]
    if len(selected) < len(facts):
        log.info("%d of %d facts have no %r version; left out", len(facts) - len(selected), len(facts), language)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = run_config(lm, facts, selected, language=language, method=method, steps=steps, threshold=threshold,
                        share=share, min_prompts=min_prompts, controls=controls, seed=seed)
    with _locked(out):
        _start(out, config, resume)
        journal = Journal(out / JOURNAL)
        try:
            st = _State.of(journal.read())
            _go(lm, selected, st, journal, out, language=language, method=method, steps=steps,
                threshold=threshold, share=share, min_prompts=min_prompts, controls=controls, seed=seed,
                progress=progress)
        finally:
            journal.close()
        # the final tables come from the journal as it stands on disk
        tables = _tables(_State.of(journal.read()))
        _write_tables(out, tables)
    return RunResult(out, json.loads((out / CONFIG).read_text(encoding="utf-8")), **tables)


def _go(lm: LM, selected: list, st: _State, journal: Journal, out: Path, *, language, method, steps, threshold,
        share, min_prompts, controls, seed, progress) -> None:
    groups = _grouped(selected)
    ctl = _Controls(lm, selected, language, seed) if controls else None
    done = sum(f.fact_id in st.facts for f in selected)
    if done:
        log.info("resuming: %d of %d facts already located", done, len(selected))
    last = time.monotonic()

    def add(rec: dict, into: dict, key: str) -> None:
        nonlocal last
        journal.append(rec)
        into[rec[key]] = rec
        if time.monotonic() - last > TABLES_EVERY:
            _write_tables(out, _tables(st))
            last = time.monotonic()

    with tqdm(total=len(selected), initial=done, desc="facts", unit="fact", disable=not progress) as bar:
        for relation, rel_facts in groups.items():
            rel = st.relations.get(relation)
            if rel is not None and all(fid in st.verified for fid, kns in rel["neurons"].items() if kns):
                continue  # finished before a restart
            bar.set_postfix_str(relation)
            for f in rel_facts:
                if f.fact_id not in st.facts:
                    add(_locate_fact(lm, f, language, method=method, steps=steps, threshold=threshold,
                                     min_prompts=min_prompts), st.facts, "fact_id")
                    bar.update()
            if relation not in st.relations:
                add(_tune(relation, [st.facts[f.fact_id] for f in rel_facts], share, min_prompts),
                    st.relations, "relation")
            rel = st.relations[relation]
            bar.set_postfix_str(f"{relation}: verifying")
            for fid in rel["facts"]:
                if fid not in st.verified and rel["neurons"].get(fid):
                    add(_verify_fact(lm, st.facts[fid], rel["neurons"][fid], ctl, rel["facts"], st.facts),
                        st.verified, "fact_id")
            _write_tables(out, _tables(st))  # tidy results as we go
            last = time.monotonic()
