"""PARAREL (Elazar et al. 2021), the data of Dai et al. (2022): paraphrased patterns per relation
over LAMA T-REx facts.

Layout, locally or under a URL: ``graphs_json/P*.jsonl`` (one pattern per line, field "pattern"
with `[X]` and `[Y]`; upstream it sits in ``pattern_data/graphs_json/``) and
``trex_lms_vocab/P*.jsonl`` (fields sub_label, obj_label, uuid). As in the paper, relations with
at most 3 patterns are dropped (`min_patterns=4`). Distractors of a fact are a few other objects of
the same relation (never an object the subject has), chosen deterministically from `seed`.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
from collections import defaultdict
from pathlib import Path

from . import fetch as F
from . import templates as T
from .schema import Fact, FactSet

log = logging.getLogger(__name__)

URL = "https://raw.githubusercontent.com/yanaiela/pararel/main/data"
PATTERN_DIRS = ("graphs_json", "pattern_data/graphs_json")
FACT_DIR = "trex_lms_vocab"
# The 41 LAMA T-REx relations (PARAREL has patterns for 39 of them); used when `source` is a URL.
LAMA_RELATIONS = (
    "P19", "P20", "P279", "P37", "P413", "P449", "P47", "P138", "P364", "P463", "P101", "P106",
    "P527", "P530", "P176", "P27", "P407", "P30", "P178", "P1376", "P131", "P1412", "P108", "P136",
    "P17", "P39", "P264", "P276", "P937", "P140", "P1303", "P127", "P103", "P190", "P1001", "P31",
    "P495", "P159", "P36", "P740", "P361",
)
# Relations whose PARAREL templates put the object last, so a causal LM can be asked them: the ones the
# PARAREL chapter's full-size runs and the speed benchmarks draw from.
CAUSAL_RELATIONS = ("P30", "P36", "P1376", "P407", "P364", "P27", "P108", "P279", "P463")


def _rel_key(r: str) -> tuple[int, str]:
    m = re.fullmatch(r"P(\d+)", r)
    return (int(m.group(1)) if m else 1 << 30, r)


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _local_relations(root: Path) -> tuple[str, list[str]]:
    for d in PATTERN_DIRS:
        if (root / d).is_dir():
            return d, sorted((p.stem for p in (root / d).glob("P*.jsonl")), key=_rel_key)
    raise FileNotFoundError(f"no PARAREL patterns under {root} (looked for {', '.join(PATTERN_DIRS)})")


def _remote_patterns(source: str, rel: str, layout: list[str], **kw) -> str | None:
    """Text of a relation's pattern file under a URL, trying both layouts; None if it has none."""
    for d in list(layout):
        try:
            text = F.read_text(source, d, f"{rel}.jsonl", **kw)
        except F.RemoteFileMissing:
            continue
        layout[:] = [d]  # the layout that worked is the one to use from now on
        return text
    return None


def distractors_for(obj: str, pool: list[str], exclude: set[str], n: int, key: str) -> tuple[str, ...]:
    """`n` objects from `pool` (sorted, unique) that are neither `obj` nor in `exclude`, chosen by `key`."""
    cands = [o for o in pool if o != obj and o not in exclude]
    if len(cands) <= n:
        return tuple(cands)
    return tuple(random.Random(key).sample(cands, n))


def load_pararel(source: str | os.PathLike = URL, relations=None, *, min_patterns: int = 4,
                 n_distractors: int = 5, seed: int = 0, cache: str | os.PathLike | None = None,
                 timeout: float = F.DEFAULT_TIMEOUT) -> FactSet:
    """PARAREL facts in English, one `Fact` per T-REx triple, all the relation's patterns as templates.

    source:       a directory (``graphs_json/`` + ``trex_lms_vocab/``) or a base URL (default: upstream).
    relations:    relation ids to load (default: all with patterns).
    min_patterns: keep relations with at least this many patterns (4: drop those with <= 3, as in the paper).
    `FactSet.info` lists ``dropped`` relations (id -> number of patterns) and ``patterns`` per relation.
    """
    if isinstance(relations, str):
        relations = [relations]
    kw = {"cache": cache, "timeout": timeout}
    remote = F.is_url(source)
    if remote:
        layout = list(PATTERN_DIRS)
        rels = list(relations) if relations is not None else list(LAMA_RELATIONS)
    else:
        root = Path(source)
        pdir, found = _local_relations(root)
        rels = [r for r in found if relations is None or r in set(relations)]
        missing = set(relations or ()) - set(found)
        if missing:
            raise FileNotFoundError(f"no PARAREL patterns for {sorted(missing)} under {root / pdir}")
    facts: list[Fact] = []
    dropped: dict[str, int] = {}
    kept_patterns: dict[str, int] = {}
    for rel in rels:
        if remote:
            text = _remote_patterns(str(source), rel, layout, **kw)
            if text is None:
                dropped[rel] = 0
                continue
        else:
            text = F.read_text(root, pdir, f"{rel}.jsonl")
        patterns = list(dict.fromkeys(p["pattern"].strip() for p in _jsonl(text)))
        bad = [p for p in patterns if p.count(T.OBJECT) != 1 or p.count(T.SUBJECT) != 1]
        if bad:
            log.warning("PARAREL %s: skipping %d malformed patterns, e.g. %r", rel, len(bad), bad[0])
        patterns = [p for p in patterns if p not in bad]
        if len(patterns) < min_patterns:
            dropped[rel] = len(patterns)
            continue
        try:
            rows = _jsonl(F.read_text(source, FACT_DIR, f"{rel}.jsonl", **kw))
        except (FileNotFoundError, F.RemoteFileMissing):
            log.warning("PARAREL %s: patterns but no facts file; skipped", rel)
            dropped[rel] = len(patterns)
            continue
        kept_patterns[rel] = len(patterns)
        facts.extend(_relation_facts(rel, patterns, rows, n_distractors, seed))
    if dropped:
        log.info("PARAREL: dropped %d relations with < %d patterns: %s", len(dropped), min_patterns, dropped)
    info = {"dropped": dropped, "patterns": kept_patterns, "min_patterns": min_patterns, "source": str(source)}
    return FactSet(facts, "pararel", info)


def _relation_facts(rel: str, patterns: list[str], rows: list[dict], n: int, seed: int) -> list[Fact]:
    objects_of: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        objects_of[r["sub_label"]].add(r["obj_label"])
    pool = sorted({r["obj_label"] for r in rows})
    tmpl = {"en": tuple(patterns)}
    out = []
    for r in rows:
        fid = f"{rel}:{r['uuid']}"
        d = distractors_for(r["obj_label"], pool, objects_of[r["sub_label"]], n, f"{seed}:{fid}")
        out.append(Fact(fid, rel, {"en": r["sub_label"]}, {"en": r["obj_label"]}, tmpl,
                        {"en": d}, source="pararel"))
    return out
