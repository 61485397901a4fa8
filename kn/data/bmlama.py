"""BMLAMA (Qi et al. 2023), the multilingual data of Chen et al. (2024): mLAMA facts parallel across
17 (BMLAMA-17) or 53 (BMLAMA-53) languages.

One TSV per language, ``{lang}.tsv``, with a header and four columns read by POSITION (the zh header
is mis-split, files end lines with CRLF): prompt with ``<mask>`` where the object goes, gold answer,
10 comma-separated candidate answers (gold included; the others become distractors), subject.
Line i is the same fact in every language. The relation is not a column: consecutive lines whose
prompt is the same once the subject is replaced by `[X]` form one relation block. Blocks are named by
the LAMA relation id when the English templates identify it (`LAMA_TEMPLATES`, in LAMA's order),
else ``bmlama-NN`` by position.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from . import fetch as F
from . import templates as T
from .schema import Fact, FactSet

log = logging.getLogger(__name__)

URL17 = "https://raw.githubusercontent.com/Betswish/Cross-Lingual-Consistency/main/1_easyrun/BMLAMA17"
URL53 = "https://raw.githubusercontent.com/Betswish/Cross-Lingual-Consistency/main/1_easyrun/BMLAMA53"
LANGUAGES17 = ("en", "fr", "nl", "es", "ru", "ja", "zh", "ko", "vi", "el", "hu", "he", "tr", "ca", "ar", "uk", "fa")
LANGUAGES53 = (
    "en", "af", "ar", "az", "be", "bg", "bn", "ca", "ceb", "cs", "cy", "da", "de", "el", "es", "et", "eu",
    "fa", "fi", "fr", "ga", "gl", "he", "hi", "hr", "hu", "hy", "id", "it", "ja", "ka", "ko", "la", "lt",
    "lv", "ms", "nl", "pl", "pt", "ro", "ru", "sk", "sl", "sq", "sr", "sv", "ta", "th", "tr", "uk", "ur",
    "vi", "zh",
)
# LAMA T-REx relations in LAMA's order with their English templates (as used by mLAMA / BMLAMA).
LAMA_TEMPLATES = (
    ("P19", "[X] was born in [Y]."), ("P20", "[X] died in [Y]."), ("P279", "[X] is a subclass of [Y]."),
    ("P37", "The official language of [X] is [Y]."), ("P413", "[X] plays in [Y] position."),
    ("P449", "[X] was originally aired on [Y]."), ("P47", "[X] shares border with [Y]."),
    ("P138", "[X] is named after [Y]."), ("P364", "The original language of [X] is [Y]."),
    ("P463", "[X] is a member of [Y]."), ("P101", "[X] works in the field of [Y]."),
    ("P106", "[X] is a [Y] by profession."), ("P527", "[X] consists of [Y]."),
    ("P530", "[X] maintains diplomatic relations with [Y]."), ("P176", "[X] is produced by [Y]."),
    ("P27", "[X] is [Y] citizen."), ("P407", "[X] was written in [Y]."), ("P30", "[X] is located in [Y]."),
    ("P178", "[X] is developed by [Y]."), ("P1376", "[X] is the capital of [Y]."),
    ("P131", "[X] is located in [Y]."), ("P1412", "[X] used to communicate in [Y]."),
    ("P108", "[X] works for [Y]."), ("P136", "[X] plays [Y] music."), ("P17", "[X] is located in [Y]."),
    ("P39", "[X] has the position of [Y]."), ("P264", "[X] is represented by music label [Y]."),
    ("P276", "[X] is located in [Y]."), ("P937", "[X] used to work in [Y]."),
    ("P140", "[X] is affiliated with the [Y] religion."), ("P1303", "[X] plays [Y]."),
    ("P127", "[X] is owned by [Y]."), ("P103", "The native language of [X] is [Y]."),
    ("P190", "[X] and [Y] are twin cities."), ("P1001", "[X] is a legal term in [Y]."),
    ("P31", "[X] is a [Y]."), ("P495", "[X] was created in [Y]."), ("P159", "The headquarter of [X] is in [Y]."),
    ("P36", "The capital of [X] is [Y]."), ("P740", "[X] was founded in [Y]."), ("P361", "[X] is part of [Y]."),
)


def read_tsv(text: str, where: str = "") -> list[tuple[str, str, tuple[str, ...], str]]:
    """Rows of one BMLAMA file: (prompt, answer, candidates, subject), header skipped, CRLF tolerated."""
    lines = [l[:-1] if l.endswith("\r") else l for l in text.split("\n")]
    out = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 4:
            raise ValueError(f"{where} line {n}: expected 4 tab-separated columns, found {len(cols)}")
        prompt, ans, cands, subj = (c.strip() for c in cols)
        if prompt.count("<mask>") != 1:
            raise ValueError(f"{where} line {n}: the prompt needs exactly one <mask>: {prompt!r}")
        out.append((prompt, ans, tuple(c.strip() for c in cands.split(",") if c.strip()), subj))
    return out


def template_of(prompt: str, subject: str) -> str:
    """The prompt as a template: subject -> `[X]` (first occurrence), ``<mask>`` -> `[Y]`."""
    t = prompt.replace("<mask>", T.OBJECT, 1)
    return t.replace(subject, T.SUBJECT, 1) if subject and subject in t else t


def blocks(templates: list[str]) -> list[int]:
    """Start indices of the runs of equal consecutive templates (always starts with 0)."""
    return [i for i in range(len(templates)) if i == 0 or templates[i] != templates[i - 1]]


def lama_names(block_templates: list[str]) -> list[str]:
    """LAMA relation id per block, matching English templates in LAMA's order; ``bmlama-NN`` if ambiguous.

    The blocks must be a subsequence of LAMA's relations (BMLAMA keeps LAMA's order); four relations
    share "[X] is located in [Y]." so a name is given only where every consistent assignment agrees.
    """
    keys = [T.normalize(t) for t in block_templates]
    lama = [(pid, T.normalize(t)) for pid, t in LAMA_TEMPLATES]
    nb, nl = len(keys), len(lama)
    # ways[i][j]: number of ways to match blocks i.. to LAMA relations j.. (capped at 2)
    ways = [[0] * (nl + 1) for _ in range(nb + 1)]
    for j in range(nl + 1):
        ways[nb][j] = 1
    for i in range(nb - 1, -1, -1):
        for j in range(nl - 1, -1, -1):
            w = ways[i][j + 1] + (ways[i + 1][j + 1] if keys[i] == lama[j][1] else 0)
            ways[i][j] = min(w, 2)
    names = [f"bmlama-{k:02d}" for k in range(nb)]
    if nb == 0 or ways[0][0] == 0:
        return names
    # forward: the LAMA positions each block can take in some complete assignment
    reach = {0}
    options: list[set[int]] = []
    for i in range(nb):
        opts = {j for s in reach for j in range(s, nl) if keys[i] == lama[j][1] and ways[i + 1][j + 1] > 0}
        options.append(opts)
        reach = {j + 1 for j in opts}
    for i, opts in enumerate(options):
        pids = {lama[j][0] for j in opts}
        if len(pids) == 1:
            names[i] = pids.pop()
    return names


def _name_from(source) -> str:
    base = str(source).rstrip("/").rsplit("/", 1)[-1]
    m = re.fullmatch(r"(?i)bmlama[-_]?(\d+)", base)
    return f"bmlama{m.group(1)}" if m else "bmlama"


def _local_languages(root: Path) -> list[str]:
    langs = sorted(p.stem for p in root.glob("*.tsv"))
    if not langs:
        raise FileNotFoundError(f"no BMLAMA files ({{lang}}.tsv) under {root}")
    return sorted(langs, key=lambda l: (l != "en", l))


def load_bmlama(source: str | os.PathLike = URL17, languages=None, *, strict: bool = False,
                name: str | None = None, cache: str | os.PathLike | None = None,
                timeout: float = F.DEFAULT_TIMEOUT) -> FactSet:
    """BMLAMA facts, one `Fact` per line, aligned across `languages` (default: every file found, or
    the variant's full language list for a URL).

    The relation blocks are found per language; the reference is English (read even when not
    requested, so relation names do not depend on `languages`), else the first language. A language
    whose blocks disagree is reported in ``info["blocks_agree"]`` (and raises with `strict`).
    """
    kw = {"cache": cache, "timeout": timeout}
    name = name or _name_from(source)
    if languages is None:
        if F.is_url(source):
            languages = LANGUAGES53 if name == "bmlama53" else LANGUAGES17
        else:
            languages = _local_languages(Path(source))
    languages = [languages] if isinstance(languages, str) else list(dict.fromkeys(languages))
    rows = {l: read_tsv(F.read_text(source, f"{l}.tsv", **kw), f"{source}/{l}.tsv") for l in languages}
    if "en" not in rows:
        try:
            rows_en = read_tsv(F.read_text(source, "en.tsv", **kw), f"{source}/en.tsv")
        except (FileNotFoundError, F.RemoteFileMissing):
            rows_en = None
    else:
        rows_en = rows["en"]
    sizes = {l: len(r) for l, r in rows.items()}
    if rows_en is not None:
        sizes.setdefault("en", len(rows_en))
    if len(set(sizes.values())) != 1:
        raise ValueError(f"BMLAMA files are not parallel (lines per language: {sizes})")
    n = next(iter(sizes.values()))

    tmpl = {l: [template_of(p, s) for p, _, _, s in r] for l, r in rows.items()}
    starts = {l: blocks(t) for l, t in tmpl.items()}
    if rows_en is not None:
        ref_lang = "en"
        ref_templates = tmpl["en"] if "en" in tmpl else [template_of(p, s) for p, _, _, s in rows_en]
        ref = blocks(ref_templates)
    else:
        ref_lang = languages[0]
        ref_templates, ref = tmpl[ref_lang], starts[ref_lang]
    agree = {l: s == ref for l, s in starts.items()}
    bad = [l for l, ok in agree.items() if not ok]
    if bad:
        msg = (f"BMLAMA relation blocks of {bad} differ from {ref_lang!r} "
               f"({ {l: len(starts[l]) for l in bad} } vs {len(ref)} blocks); using {ref_lang!r}'s blocks")
        if strict:
            raise ValueError(msg)
        log.warning(msg)
    names = lama_names([ref_templates[s] for s in ref]) if ref_lang == "en" else [
        f"bmlama-{k:02d}" for k in range(len(ref))]
    relation_of = []
    for k, s in enumerate(ref):
        end = ref[k + 1] if k + 1 < len(ref) else n
        relation_of.extend([names[k]] * (end - s))

    facts = []
    for i in range(n):
        subj, obj, tpl, dis = {}, {}, {}, {}
        for l in languages:
            prompt, ans, cands, s = rows[l][i]
            subj[l], obj[l], tpl[l] = s, ans, (tmpl[l][i],)
            dis[l] = tuple(dict.fromkeys(c for c in cands if c != ans))
        facts.append(Fact(f"{name}:{i:05d}", relation_of[i], subj, obj, tpl, dis, source=name))
    info = {"blocks": {l: starts[l] for l in languages}, "reference": ref_lang, "block_starts": ref,
            "blocks_agree": agree, "relations": dict(zip(names, (len(x) for x in _runs(ref, n)))),
            "source": str(source)}
    return FactSet(facts, name, info)


def _runs(starts: list[int], n: int):
    for k, s in enumerate(starts):
        yield range(s, starts[k + 1] if k + 1 < len(starts) else n)
