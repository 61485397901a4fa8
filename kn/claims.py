"""The papers' claims that the book tests, each judged on the recorded runs (`book/results/`).

A claim is one unit, registered once (`register`): its id, paper, one line of what it says, the
`papers.csv` quantity holding the paper's number (None: the paper gives none that could be read
here), and a judge: recordings -> findings, one per model (and language), each with our value, its
interval, the recording it comes from and a verdict of `VERDICTS` with the reason. `table` puts them
side by side with the paper's number (`book/reproduction.md`).

Verdicts (`against`, for a claimed direction): "holds" when our interval excludes 0 on the claimed
side and reaches the paper's number (or the paper gives none); "holds in direction" when it excludes 0
on that side but stays short of the paper's; "does not hold" when it does not exclude 0 or lies on the
other side; "not testable here" when nothing is recorded for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .stats import bootstrap_mean

VERDICTS = ("holds", "holds in direction", "does not hold", "not testable here")
COLUMNS = ["claim", "paper", "says", "paper_value", "paper_source", "model", "language", "ours", "low", "high",
           "verdict", "reason", "recording"]


@dataclass(frozen=True)
class Finding:
    """One judgement of a claim on one recording (one model, one language or "all")."""

    model: str
    language: str
    value: float
    low: float
    high: float
    verdict: str
    reason: str
    recording: str


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    says: str
    quantity: str | None  # its papers.csv quantity (None: no number of the paper's)
    judge: Callable[["Recordings", float], list[Finding]]  # (recordings, the paper's number or NaN) -> findings


CLAIMS: dict[str, Claim] = {}


def register(claim: Claim) -> Claim:
    if claim.id in CLAIMS:
        raise ValueError(f"a claim {claim.id!r} is registered already")
    CLAIMS[claim.id] = claim
    return claim


def against(value: float, low: float, high: float, paper: float, sign: int) -> tuple[str, str]:
    """The verdict on a claimed direction `sign` (+1: up, -1: down) from our value and interval, and the
    paper's number (NaN: none)."""
    if not all(map(math.isfinite, (value, low, high))):
        return "does not hold", "no interval: too few facts"
    shown = f"{value:+.3g} [{low:+.3g}, {high:+.3g}]"
    if sign * low > 0 and sign * high > 0:
        if math.isnan(paper):
            return "holds", f"{shown} excludes 0 (the paper gives no number to compare)"
        if low <= paper <= high or sign * value >= sign * paper:
            return "holds", f"{shown} reaches the paper's {paper:+.3g}"
        return "holds in direction", f"{shown} excludes 0 but falls short of the paper's {paper:+.3g}"
    if sign * high < 0:
        return "does not hold", f"{shown}: the opposite direction"
    return "does not hold", f"{shown} includes 0"


class Recordings:
    """The recordings under a results directory, by kind: `kind("pararel")` -> {name: Recording} for
    `root/pararel/<name>/`; `runs("amig")` the AMIG chapter's per-method facts (`kn.quality`)."""

    def __init__(self, root):
        self.root = Path(root)
        self._cache: dict = {}

    def kind(self, kind: str) -> dict:
        if kind not in self._cache:
            from . import recording

            self._cache[kind] = {p.parent.name: recording.read(p.parent)
                                 for p in sorted((self.root / kind).glob("*/provenance.json"))}
        return self._cache[kind]

    def where(self, kind: str, name: str) -> str:
        rec = self.kind(kind).get(name)
        commit = rec.provenance.get("commit") if rec is not None else None
        return f"{kind}/{name}" + (f" ({commit})" if commit else "")


def _model_language(rec, name: str) -> tuple[str, str]:
    """(model, language) of a recording, from its run's config where it has one."""
    cfg = rec.provenance.get("run_config") or {}
    model = (cfg.get("model") or {}).get("model", name)
    try:
        from .runs.config import languages_of

        langs = languages_of(cfg) if cfg else []
    except (KeyError, ValueError, TypeError):
        langs = []
    return model, ",".join(langs) or "en"


def _mean_of(kind: str, column: str, sign: int, source: str = "relations") -> Callable:
    """A judge: the mean over a table's rows of `column`, bootstrap over its rows, against the paper."""
    def judge(recs: Recordings, paper: float) -> list[Finding]:
        out = []
        for name, rec in recs.kind(kind).items():
            if kind == "pararel" and not name.endswith("-ig"):
                continue  # the claims are about IG's knowledge neurons; activation is the paper's baseline
            m, lo, hi = bootstrap_mean(rec[source][column])
            model, lang = _model_language(rec, name)
            out.append(Finding(model, lang, m, lo, hi, *against(m, lo, hi, paper, sign), recs.where(kind, name)))
        return out
    return judge


def _specific(recs: Recordings, paper: float) -> list[Finding]:
    """Per located fact: its suppression minus that of a fact of another relation (the verify control)."""
    out = []
    for name, rec in recs.kind("pararel").items():
        if not name.endswith("-ig"):
            continue
        f = rec["facts"]
        m, lo, hi = bootstrap_mean((f.suppression - f.control_other_suppression).to_numpy(float))
        model, lang = _model_language(rec, name)
        out.append(Finding(model, lang, m, lo, hi, *against(m, lo, hi, paper, -1), recs.where("pararel", name)))
    return out


def _update(recs: Recordings, paper: float) -> list[Finding]:
    """Success of updates through the knowledge neurons; short of the paper's, still better than the
    same edit through random neurons of the same layers: holds in direction."""
    out = []
    for name, rec in recs.kind("editing").items():
        u = rec["updates"]
        m, lo, hi = bootstrap_mean(u.success)
        _, dlo, dhi = bootstrap_mean((u.success - u.random_success).to_numpy(float))
        model, lang = _model_language(rec, name)
        if math.isfinite(paper) and (lo <= paper <= hi or m >= paper):
            verdict, why = "holds", f"{m:.1%} [{lo:.1%}, {hi:.1%}] reaches the paper's {paper:.1%}"
        elif dlo > 0:
            verdict, why = "holds in direction", (f"{m:.1%} [{lo:.1%}, {hi:.1%}], short of the paper's {paper:.1%}, "
                                                  f"but above random neurons' (difference [{dlo:+.1%}, {dhi:+.1%}])")
        else:
            verdict, why = "does not hold", (f"{m:.1%} [{lo:.1%}, {hi:.1%}]: no better than random neurons "
                                             f"(difference [{dlo:+.1%}, {dhi:+.1%}])")
        out.append(Finding(model, lang, m, lo, hi, verdict, why, recs.where("editing", name)))
    return out


def _erase(recs: Recordings, paper: float) -> list[Finding]:
    """Erasing is specific: the erased relation's perplexity rises more than the other relations'."""
    out = []
    for name, rec in recs.kind("editing").items():
        e = rec["erased"]
        more = (e.ppl_after / e.ppl_before > e.other_ppl_after / e.other_ppl_before).to_numpy()
        share = float(more.mean()) if len(more) else math.nan
        model, lang = _model_language(rec, name)
        why = f"in {int(more.sum())} of {len(more)} erased relations"
        verdict = ("not testable here" if not len(more) else "holds" if more.all()
                   else "holds in direction" if share > 0.5 else "does not hold")
        out.append(Finding(model, lang, share, math.nan, math.nan, verdict, why, recs.where("editing", name)))
    return out


def _amig(recs: Recordings, paper: float) -> list[Finding]:
    """Per model and language: AMIG's Succ against zero-baseline IG's, and their suppression intervals."""
    from .amig_recorded import recorded_runs
    from .quality import compare, localization_quality

    out = []
    runs, found = recorded_runs(recs.root / "amig")
    for name, methods in runs.items():
        c = compare(localization_quality(methods), "AMIG", "IG (zero)")
        for r in c.itertuples():
            d = r.succ - r.succ_against
            why = (f"Succ {r.succ:.2f} vs {r.succ_against:.2f}; suppression related - unrelated "
                   f"{r.suppression_diff:+.1%} [{r.suppression_diff_low:+.1%}, {r.suppression_diff_high:+.1%}] vs "
                   f"{r.suppression_diff_against:+.1%} [{r.suppression_diff_low_against:+.1%}, "
                   f"{r.suppression_diff_high_against:+.1%}]")
            better = r.suppression_diff_high < r.suppression_diff_low_against  # AMIG's interval wholly lower
            verdict = ("holds" if r.higher_succ and better else "holds in direction" if r.higher_succ
                       else "does not hold")
            if verdict == "holds in direction":
                why += " (the intervals overlap)" if r.intervals_overlap else " (AMIG's is not the lower one)"
            prov = found[name][0].path.relative_to(recs.root).as_posix()
            model = _model_language(found[name][0], name)[0]
            out.append(Finding(model, r.language, d, math.nan, math.nan, verdict, why, prov))
    return out


def _likn_recs(recs: Recordings):
    from .likn import by_layer, sets_from_table
    from .runs.config import languages_of

    for name, rec in recs.kind("likn").items():
        cfg = rec.provenance["run_config"]
        yield name, rec, languages_of(cfg), cfg["model"]["n_layers"], by_layer, sets_from_table


def _likn_exist(recs: Recordings, paper: float) -> list[Finding]:
    out = []
    for name, rec, langs, _, _, _ in _likn_recs(recs):
        lf = rec["likn"]
        two = lf[lf.languages_with_neurons >= 2]
        m, lo, hi = bootstrap_mean((two.n_likn > 0).to_numpy(float))
        verdict, why = against(m, lo, hi, paper, +1)
        out.append(Finding(_model_language(rec, name)[0], ",".join(langs), m, lo, hi, verdict,
                           why + f"; share of the {len(two)} facts with neurons in two or more languages",
                           recs.where("likn", name)))
    return out


def _likn_top(recs: Recordings, paper: float) -> list[Finding]:
    out = []
    for name, rec, langs, n_layers, by_layer, sets_from_table in _likn_recs(recs):
        layers = by_layer(sets_from_table(rec["neurons"]), n_layers)
        top = layers.layer >= n_layers - n_layers // 3
        total = int(layers.likn.sum())
        share = float(layers.likn[top].sum() / total) if total else math.nan
        verdict = ("not testable here" if not total else "holds" if share > 0.5 else "does not hold")
        why = (f"{int(layers.likn[top].sum())} of {total} LIKN in layers {n_layers - n_layers // 3}-{n_layers - 1} "
               f"(the top third)" if total else "no LIKN recorded")
        out.append(Finding(_model_language(rec, name)[0], ",".join(langs), share, math.nan, math.nan, verdict, why,
                           recs.where("likn", name)))
    return out


def _likn_effect(recs: Recordings, paper: float) -> list[Finding]:
    """Suppressing the LIKN lowers the fact more than an unrelated one, in each language."""
    from .crosslingual import summary

    out = []
    for name, rec, langs, _, _, _ in _likn_recs(recs):
        if "crosslingual" not in rec.tables:
            continue
        s = summary(rec["crosslingual"]).set_index(["condition", "source", "measured"])
        for lang in langs:
            if ("likn", "all", lang) not in s.index:
                continue
            r = s.loc[("likn", "all", lang)]
            m, lo, hi = r.suppression_diff, r.suppression_diff_low, r.suppression_diff_high
            out.append(Finding(_model_language(rec, name)[0], lang, m, lo, hi, *against(m, lo, hi, paper, -1),
                               recs.where("likn", name)))
    return out


def _dkn_exist(recs: Recordings, paper: float) -> list[Finding]:
    out = []
    for name, rec in recs.kind("dkn").items():
        f = rec["facts"]
        f = f[f.n_neurons.notna()]
        m, lo, hi = bootstrap_mean((f.dkn_pairs > 0).to_numpy(float))
        model, lang = _model_language(rec, name)
        verdict, why = against(m, lo, hi, paper, +1)
        out.append(Finding(model, lang, m, lo, hi, verdict, why + f"; share of {len(f)} located facts with a pair",
                           recs.where("dkn", name)))
    return out


def _factcheck(recs: Recordings, paper: float) -> list[Finding]:
    """F1 of detecting false statements over all relations: DKN minus the model's argmax."""
    from .factcheck import recorded_summary

    out = []
    for name, rec in recs.kind("factcheck").items():
        s = recorded_summary(rec)
        g = s[s.relation == "all"].set_index("method").f1
        model, lang = _model_language(rec, name)
        if "dkn" not in g or not math.isfinite(g["dkn"]):
            out.append(Finding(model, lang, math.nan, math.nan, math.nan, "not testable here",
                               "no relation has a DKN set with test statements", recs.where("factcheck", name)))
            continue
        d = float(g["dkn"] - g["argmax"])
        verdict = "holds" if d > 0 else "does not hold"
        why = f"F1 {g['dkn']:.2f} (DKN) vs {g['argmax']:.2f} (argmax); no interval (one split)"
        out.append(Finding(model, lang, d, math.nan, math.nan, verdict, why, recs.where("factcheck", name)))
    return out


DAI, CHEN = "Dai et al. 2022", "Chen et al. 2024"
for _c in (
    Claim("dai-suppress", DAI, "Suppressing a fact's knowledge neurons lowers P(gold)",
          "suppression of the knowledge neurons: change of P(gold)", _mean_of("pararel", "suppression", -1)),
    Claim("dai-amplify", DAI, "Amplifying them (x2) raises P(gold)",
          "amplification x2 of the knowledge neurons: change of P(gold)", _mean_of("pararel", "amplification", +1)),
    Claim("dai-specific", DAI, "The effect is the fact's: a fact of another relation changes less", None, _specific),
    Claim("dai-update", DAI, "Editing the knowledge neurons' value slots updates facts",
          "fact updating: success rate", _update),
    Claim("dai-erase", DAI, "Zeroing a relation's most frequent neurons erases it, not the others",
          None, _erase),
    Claim("chen-amig", CHEN, "AMIG localizes knowledge better than zero-baseline IG (Succ)",
          "AMIG vs IG: Succ higher", _amig),
    Claim("chen-likn", CHEN, "Language-independent knowledge neurons exist", "LIKN: share of facts with them",
          _likn_exist),
    Claim("chen-likn-top", CHEN, "They sit mostly in the top layers", "LIKN: share in the top layers", _likn_top),
    Claim("chen-likn-effect", CHEN, "Suppressing them changes the fact in every language",
          "LIKN: suppression, related - unrelated", _likn_effect),
    Claim("chen-dkn", CHEN, "Degenerate knowledge neurons exist", "DKN: share of facts with a pair", _dkn_exist),
    Claim("chen-factcheck", CHEN, "Fact-checking with DKN beats the model's own argmax (F1)",
          "fact-checking: DKN F1 minus argmax F1", _factcheck),
):
    register(_c)


def paper_number(papers, claim: Claim) -> tuple[float, str]:
    """(the paper's number, its source) from the papers table; NaN and why for none."""
    if claim.quantity is None:
        return math.nan, "value not given: no single number of the paper's states it"
    rows = papers[(papers.quantity == claim.quantity) & (papers.paper == claim.paper)]
    if len(rows) != 1:
        return math.nan, f"value not given ({len(rows)} rows for it in papers.csv)"
    v = float(rows.value.iloc[0])
    return v, rows.source.iloc[0]


def table(root, claims: Iterable[str] | None = None):
    """A row per (claim, model, language) of the recordings under `root` (`COLUMNS`), claims in
    registry order; a claim with nothing recorded gets one "not testable here" row."""
    import pandas as pd

    from .papers import load

    root = Path(root)
    papers = load(root / "papers.csv")
    recs = Recordings(root)
    rows = []
    for cid in claims or CLAIMS:
        c = CLAIMS[cid]
        paper, source = paper_number(papers, c)
        base = {"claim": c.id, "paper": c.paper, "says": c.says, "paper_value": paper, "paper_source": source}
        found = c.judge(recs, paper)
        if not found:
            rows.append({**base, "model": "", "language": "", "ours": math.nan, "low": math.nan, "high": math.nan,
                         "verdict": "not testable here", "reason": "nothing recorded for it", "recording": ""})
        for f in found:
            rows.append({**base, "model": f.model, "language": f.language, "ours": f.value, "low": f.low,
                         "high": f.high, "verdict": f.verdict, "reason": f.reason, "recording": f.recording})
    out = pd.DataFrame(rows, columns=COLUMNS)
    bad = set(out.verdict) - set(VERDICTS)
    assert not bad, bad
    return out



def readable(t):
    """A `table` as a reader sees it, in two narrow tables of strings: (verdicts: the claim, the paper's
    number, the model and language, ours with its interval, the verdict; reasons: the same rows' reason,
    recording and the paper number's source)."""
    def num(v: float) -> str:
        return "-" if not math.isfinite(v) else f"{v:+.3g}"

    def ours(r) -> str:
        if not math.isfinite(r.ours):
            return "-"
        return num(r.ours) + (f" [{num(r.low)}, {num(r.high)}]" if math.isfinite(r.low) else "")

    claim = [f"{p.split(' et al.')[0]}: {says}" for p, says in zip(t.paper, t.says)]
    where = [f"{m} {l}".strip() for m, l in zip(t.model, t.language)]
    verdicts = t.assign(claim=claim, number=[("value not given" if not math.isfinite(v) else num(v))
                                             for v in t.paper_value],
                        where=where, shown=[ours(r) for r in t.itertuples()])[
        ["claim", "number", "where", "shown", "verdict"]].rename(
        columns={"number": "paper's number", "where": "model, language", "shown": "ours [95% interval]"})
    reasons = t.assign(claim=t.claim, where=where)[["claim", "where", "reason", "recording", "paper_source"]].rename(
        columns={"where": "model, language", "paper_source": "the paper's number from"})
    return verdicts, reasons
