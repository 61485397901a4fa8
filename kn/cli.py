"""Command line: `kn probe "Paris is the capital of"`, `kn locate -a France PROMPT ...`,
`kn run --data builtin --relations P36 --facts-per-relation 20 --out runs/x`."""
from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import signal
import sys
import threading
import time

from . import checks
from .data.select import KNOWN_TOP
from .models import DEFAULT_MODEL, PACKAGED


def _table(rows: list[tuple], header: tuple) -> str:
    cells = [tuple(map(str, header))] + [tuple(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _load(args):
    import torch

    from .models import load

    if args.threads:
        torch.set_num_threads(args.threads)
    return load(args.model, device=args.device, dtype=getattr(torch, args.dtype))


def cmd_probe(args) -> None:
    from .probing import probe

    lm = _load(args)
    preds = probe(lm, args.prompt, k=args.k)
    print(f"{lm.name}: {args.prompt!r}")
    print(_table([(i + 1, repr(p.token), f"{p.prob:.4f}") for i, p in enumerate(preds)], ("rank", "token", "prob")))


def cmd_locate(args) -> None:
    from .interventions import AMPLIFY_FACTOR
    from .localization import locate_with_scores
    from .verification import verify

    settings = attribution(args)
    _allocator(args)
    lm = _load(args)
    t0 = time.perf_counter()
    found = locate_with_scores(
        lm, args.prompts, args.answer, settings, threshold=args.threshold, share=args.share,
        min_prompts=args.min_prompts,
        on_prompt=lambda p, s: print(f"  {len(s):3d} neurons pass the coarse filter: {p!r}", file=sys.stderr))
    neurons, mean, counts = found.neurons, found.mean_scores(), found.prompt_counts()
    print(f"{lm.name}: {len(neurons)} knowledge neurons of {args.answer!r} from {len(args.prompts)} prompts "
          f"({time.perf_counter() - t0:.1f} s)")
    print(_table([(l, i, f"{float(mean[l, i]):.4f}", f"{counts[(l, i)]}/{len(found.sets)}") for l, i in neurons],
                 ("layer", "neuron", "mean score", "prompts")))
    if args.verify and neurons:
        v = verify(lm, args.prompts, args.answer, neurons)
        print(f"suppress: {v.fact.suppression:+.1%}   amplify x{AMPLIFY_FACTOR:g}: {v.fact.amplification:+.1%}")


def _allocator(args) -> None:
    """`--keep-freed-memory`: the process-wide allocator tuning, only when asked for (`kn.allocator`)."""
    from . import allocator

    if args.keep_freed_memory:
        allocator.keep_freed_memory()


def _add_keep_freed_memory(p) -> None:
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="keep freed memory in the process for reuse: faster repeated attributions on glibc "
                        "(kn.allocator; the process holds on to its peak memory)")


def _fmt(x: float, spec: str) -> str:
    return "-" if x != x else format(x, spec)  # NaN: nothing verified


def _relations(args) -> list[str] | None:
    return checks.names(args.relations, "--relations") if args.relations else None


def _facts(args, languages: list[str]):
    """`--data` (before the model: a bad path fails fast)."""
    from .data import load

    try:
        return load(args.data, relations=_relations(args), languages=languages)
    except OSError as err:  # missing files, offline download: one readable line
        raise ValueError(f"cannot load --data {args.data!r}: {err}") from err


def _selected(args, facts, lm, language, seed: int):
    """The facts `kn run` runs on: --relations, --facts-per-relation, --known (in every language).

    The choice is kept in the run directory (selection.json) and reused when the same run resumes:
    probing which facts the model knows costs minutes on a large dataset. It is written only into a
    directory `kn run` may use (`check_out`), and with --fresh only after the run there was moved aside."""
    import json
    from pathlib import Path

    from .data import explain, select_facts, shared_selection
    from .runs.directory import SELECTION, check_out, replace, write_json
    from .version import __version__

    relations = _relations(args)
    sentence = bool(getattr(args, "sentence", None))
    key = {"data": facts.fingerprint(), "model": lm.name, "relations": relations, "language": language,
           "per_relation": args.facts_per_relation, "known": args.known, "seed": seed}
    top = getattr(args, "known_top", KNOWN_TOP)
    if top != KNOWN_TOP and not args.known:
        raise checks.ArgumentError(f"--known-top {top} ranks the known facts: add --known, or leave --known-top out")
    if args.known and top != KNOWN_TOP:  # a selection.json of the default (no such key) stays valid
        key["known_top"] = top
    if sentence:  # an older selection.json (no such key) stays valid for the default
        key["sentence"] = True
    if args.known and getattr(args, "dtype", "float32") != "float32":  # the probe ranks with these weights
        key["dtype"] = args.dtype
    shared = {**key, "kn": __version__} if shared_selection.shareable(args.model) else None
    path = Path(args.out) / SELECTION
    if not args.fresh and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") == json.loads(json.dumps(key)):
            chosen = facts.filter(ids=saved["fact_ids"])
            if len(chosen) == len(saved["fact_ids"]):
                print(f"reusing the fact selection in {path}", file=sys.stderr)
                return chosen
    kept = None if args.fresh or shared is None else shared_selection.lookup(shared)
    if kept is not None and len(chosen := facts.filter(ids=kept["fact_ids"])) == len(kept["fact_ids"]) and len(chosen):
        print(f"reusing the fact selection an earlier run made of the same facts ({shared_selection.path_of(shared)})",
              file=sys.stderr)
        selection = kept.get("selection")
    else:
        memo = None if shared is None or not args.known else shared_selection.Progress(shared)
        if memo is not None and args.fresh:
            memo.discard()
        elif memo:
            print(f"resuming the fact selection: {len(memo)} relations already probed ({memo.path})", file=sys.stderr)
        chosen = select_facts(facts, relations=relations, per_relation=args.facts_per_relation,
                              language=language, lm=lm, known=args.known, k=top, seed=seed, sentence=sentence,
                              progress=True, memo=memo)
        if not len(chosen):
            raise ValueError(f"no facts selected from {args.data!r} (relations {relations}, "
                             f"language {language!r}): {explain(chosen.info['selection'])}")
        selection = chosen.info.get("selection")
        if shared is not None:
            shared_selection.keep(shared, [f.fact_id for f in chosen], selection)
        if memo is not None:
            memo.discard()
    check_out(path.parent)  # again: it may have changed meanwhile
    if args.fresh:
        replace(path.parent)  # the old run, its selection too, moved aside whole (logged); None if no run there
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"key": key, "fact_ids": [f.fact_id for f in chosen], "selection": selection})
    return chosen


def run_settings(args):
    """The RunSettings of `kn run`'s arguments (the one place they meet): the attribution flags, the
    common ones, and each phase's flags (`phase_flags`), those given only."""
    from .runs import RunSettings

    given = {name: getattr(args, name) for name, _ in phase_flags() if getattr(args, name) is not None}
    phases = tuple(checks.names(args.phases, "--phases")) if args.phases else RunSettings().phases
    langs = {"languages": args.languages} if args.languages else {"language": args.language or RunSettings().language}
    return RunSettings.make(seed=args.seed, phases=phases, attribution=attribution(args), **langs, **given)


def attribution(args):
    """The attribution settings of `--method` and the IG flags (`kn run`, `kn locate`); ValueError for an IG
    flag given with another method."""
    from .fast_settings import fast_setting
    from .settings import resolve

    ig = dict(steps=args.steps, rule=args.rule, baseline=args.baseline, multiplier=args.multiplier,
              screen=args.screen, head_dtype=args.head_dtype)
    for flag, value in ig.items():
        if args.method != "ig" and value is not None:
            raise ValueError(f"--{flag.replace('_', '-')} belongs to integrated gradients; it does not apply to "
                             f"--method {args.method}")
    if getattr(args, "fast", False):
        given = [f"--{f}" for f in ("steps", "rule", "screen") if ig[f] is not None]
        if args.method != "ig" or given:
            raise ValueError(f"--fast chooses IG's rule and points; leave out {', '.join(given) or '--method'} "
                             "or --fast")
        fast = fast_setting(args.model)
        ig |= dict(rule=fast.rule, steps=fast.steps, screen=fast.screen)
    return resolve(method=args.method, **ig)


def phase_flags():
    """(setting name, dataclass field) of every registered phase's settings, in registry order."""
    import dataclasses

    from .runs.phases import PHASES

    return [(f.name, f) for p in PHASES.values() for f in dataclasses.fields(p.Settings)]


def cmd_run(args) -> None:
    from .runs import run
    from .runs.directory import check_out

    if args.languages and args.language:
        raise ValueError("pass --language (one) or --languages (several), not both")
    settings = run_settings(args)  # before the data and the model: bad settings and --out fail fast
    _engine(args)
    langs = list(settings.languages)
    check_out(args.out)  # a folder that is not a kn run: refused, nothing written
    _allocator(args)
    facts = _facts(args, langs)
    lm = _load(args)
    t0 = time.perf_counter()
    facts = _selected(args, facts, lm, langs if len(langs) > 1 else langs[0], settings.seed)
    print(f"{lm.name}: {len(facts)} facts of {len(facts.relations)} relations -> {args.out}", file=sys.stderr)
    res = run(lm, facts, args.out, settings, resume=not args.fresh, engine=_engine(args), command=args.invocation)
    for lang, one in res.runs.items():
        if len(langs) > 1:
            print(f"\n{lang}:")
        _summary(one)
    print(f"{time.perf_counter() - t0:.0f} s; tables in {args.out}")


SUMMARY = [("relation", "relation", None), ("facts", "facts", None), ("errors", "errors", None)]  # then each phase's


def _engine(args):
    """The engine of `kn run --engine/--workers/--address` (checked before the model loads)."""
    from .runs.cluster import Ray

    if args.engine != "ray":
        if args.workers is not None or args.address is not None:
            raise ValueError("--workers and --address belong to --engine ray")
        return "local"
    return Ray(workers=args.workers or Ray.workers, address=args.address, device=args.device)


def _summary(res) -> None:
    """The run's settings, a line per phase, and the relations table: the columns its phases name."""
    from .runs.phases import make_phases

    phases = make_phases(res.settings)
    a = res.settings.attribution
    print(f"settings: language {', '.join(res.languages)}, seed {res.settings.seed}, attribution "
          + ", ".join(f"{k} {v}" for k, v in a.to_dict().items() if v is not None))
    for p in phases:
        values = [f"{k} {v}" for k, v in res.config["settings"].get(p.name, {}).items()]
        if values:
            print(f"  {p.name}: " + ", ".join(values))
    rel = res.relations
    cols = [c for c in [*SUMMARY, *(c for p in phases for c in p.summary)] if c[0] in rel.columns]
    rows = [tuple(v if f is None else _fmt(v, f) for (_, _, f), v in zip(cols, r))
            for r in rel[[c for c, _, _ in cols]].itertuples(index=False)]
    print(_table(rows, tuple(h for _, h, _ in cols)))
    h = res.headline()
    if "suppression" in h:
        print(f"mean over relations: suppress {_fmt(h['suppression'], '+.1%')}, "
              f"amplify {_fmt(h['amplification'], '+.1%')} "
              f"(other-relation control {_fmt(h['control_other_suppression'], '+.1%')} / "
              f"{_fmt(h['control_other_amplification'], '+.1%')})")


def cmd_calibrate(args) -> None:
    """`kn calibrate`: the cheapest quadrature no less accurate than --against on every calibration
    prompt (`kn.calibrate`), on facts of --data; with --record, its tables and provenance."""
    from . import recording
    from .calibration import calibrate, queries_of
    from .data import explain, select_facts
    from .quadrature import RULES
    from .settings import IG

    rule, _, steps = args.against.partition(":")
    if rule not in RULES or not steps.isdigit():
        raise ValueError(f"--against must be RULE:STEPS with a rule of {list(RULES)}, e.g. riemann_left:20; "
                         f"got {args.against!r}")
    languages = checks.names(args.languages, "--languages")
    if args.record:
        recording.check_dest(args.record)  # before the model: a folder kn may not record into is refused now
    t0, started = time.perf_counter(), recording.now()
    facts = _facts(args, languages)
    lm = _load(args)
    chosen = select_facts(facts, relations=_relations(args), per_relation=args.facts_per_relation,
                          language=languages if len(languages) > 1 else languages[0], lm=lm, known=args.known,
                          seed=args.seed, progress=True)
    queries = queries_of(lm, chosen, languages)
    if not queries:
        raise ValueError(f"no calibration prompt: none of the selected facts can be asked of {lm.name} in "
                         f"{', '.join(languages)}; choose other --relations or --data. "
                         f"{explain(chosen.info['selection'])}")
    base = IG(baseline=args.baseline or IG().baseline, multiplier=args.multiplier or IG().multiplier)
    cal = calibrate(lm, queries, base, against=(rule, int(steps)), exact=args.exact)
    print(f"{lm.name}: {cal.rule} with {cal.steps} points, worst error {cal.error:.2e} over {len(queries)} prompts "
          f"(no worse than {args.against} on each)")
    print(_table([(r, m, f"{max(e):.2e}", "*" if (r, m) == (cal.rule, cal.steps) else "") for r, m, e in cal.grid],
                 ("rule", "steps", "worst error", "chosen")))
    if args.record:
        prov = recording.provenance(args.invocation, seconds=time.perf_counter() - t0, started=started,
                                    settings={"model": lm.name, "data": args.data, "relations": _relations(args),
                                              "languages": languages, "facts_per_relation": args.facts_per_relation,
                                              "known": args.known, "seed": args.seed, "against": args.against,
                                              "exact": args.exact, "base": base.to_dict()})
        print(f"recorded -> {recording.record(args.record, cal.tables(queries), prov)}")


def cmd_convergence(args) -> None:
    """`kn convergence`: every quadrature rule at several point counts against an exact integral on real
    facts (`kn.convergence`), printed; with --record, its tables and provenance."""
    from . import recording
    from .convergence import study

    if args.record:
        recording.check_dest(args.record)  # before the models: a folder kn may not record into is refused now
    started = recording.now()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    t = study(models, args.out, facts=args.facts, prompts=args.prompts, steps=steps, exact=args.exact,
              pararel=args.pararel, pararel_relations=args.pararel_relations.split(",") if args.pararel_relations
              else None, cross_facts=args.cross_facts)
    cross = t["exact_checks"].disagreement
    if len(cross):
        print(f"exact integral: Gauss-Legendre {args.exact}; its largest disagreement with the trapezoid rule at "
              f"{4 * args.exact} points: {cross.max():.2e} of the largest score ({len(cross)} prompts)")
    print(t["errors"].groupby(["model", "rule", "steps"])[["error", "coarse_vs_exact", "coarse_vs_paper"]].median()
          .unstack("model").round(4).to_string())
    print(t["sets"].groupby(["model", "rule", "steps"])[["refined_vs_exact", "refined_vs_paper"]].mean()
          .unstack("model").round(3).to_string())
    print("recommended:", t["recommended"].to_dict("records")[0])
    if args.record:
        settings = {k: getattr(args, k) for k in ("out", "models", "facts", "prompts", "steps", "exact", "pararel",
                                                   "pararel_relations", "cross_facts")}
        prov = recording.provenance(args.invocation, seconds=t["seconds"], started=started, settings=settings)
        tables = {k: v for k, v in t.items() if k != "seconds"}
        print(f"recorded -> {recording.record(args.record, tables, prov)}")


def cmd_record(args) -> None:
    from .recording import record_run

    dest = record_run(args.run_dir, args.dest, args.command_line, seconds=args.seconds, kn_commit=args.commit)
    print(f"recorded {args.run_dir} -> {dest}")


def cmd_coverage(args) -> None:
    from . import data, recording
    from .data.coverage import coverage

    t0, started = time.perf_counter(), recording.now()
    if args.record:
        recording.check_dest(args.record)  # before the model: a folder kn may not record into is refused now
    languages = checks.names(args.languages, "--languages") if args.languages else None
    facts = data.load(args.data, languages=languages)  # before the model: a missing folder fails fast
    lm = _load(args)
    table = coverage(facts, lm, languages, known=not args.no_probe, sample=args.sample or None, seed=args.seed,
                     sentence=args.sentence, progress=True)
    print(f"{lm.name} on {args.data}" + (", prompts whose object is not last as sentence targets" if args.sentence
                                         else "")
          + ("" if args.no_probe else " (known: gold in the top 10 on at least half the prompts"
             + (", a sentence target's gold sentence above every distractor's" if args.sentence else "")
             + f", of a seeded sample of {args.sample})"))
    print(table.to_string(index=False))
    if args.record:
        cmd = "kn coverage " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["coverage"] else sys.argv[1:])
        prov = recording.provenance(cmd, seconds=time.perf_counter() - t0, started=started,
                                    settings={"model": lm.name, "data": args.data, "languages": languages,
                                              "sample": args.sample, "seed": args.seed, "k": 10,
                                              "min_fraction": 0.5, "probed": not args.no_probe,
                                              **({"sentence": True} if args.sentence else {})})
        print(f"recorded -> {recording.record(args.record, {'coverage': table}, prov)}")


def _add_run(p) -> None:
    """The arguments of `kn run`; the settings' defaults are RunSettings' (`run_settings` reads them back)."""
    import dataclasses

    from .runs import RunSettings
    from .runs.phases import PHASES

    D = RunSettings()
    p.add_argument("--data", default="builtin", help="builtin, pararel:PATH or bmlama:PATH (directory or URL)")
    p.add_argument("--relations", default=None, help="comma-separated relation ids, e.g. P36,P1376 (default: all)")
    p.add_argument("--facts-per-relation", type=positive_int, default=None, help="seeded sample per relation (default: all)")
    p.add_argument("--known", action="store_true",
                   help="only facts the model knows (gold in its top 10 on at least half the prompts)")
    p.add_argument("--known-top", type=positive_int, default=KNOWN_TOP,
                   help=f"with --known: the gold's rank that counts as known (default {KNOWN_TOP}; 1: the model's "
                        "answer, as the edit study asks)")
    p.add_argument("--out", "-o", required=True,
                   help="run directory: absent, empty or a kn run's (an existing run there is resumed)")
    p.add_argument("--language", default=None, help=f"the facts' language (default {D.language})")
    p.add_argument("--languages", default=None,
                   help="comma-separated language codes: a run per language over the facts they share "
                        "(--known: known in every one), in --out/<language>")
    _add_method(p, D.attribution.kind)
    _add_baseline(p)
    p.add_argument("--seed", type=int, default=D.seed, help="seed of every seeded choice (facts, controls)")
    p.add_argument("--phases", default=None,
                   help=f"comma-separated phases, in order, of {', '.join(PHASES)} (default {','.join(D.phases)}; "
                        "add degenerate for degenerate knowledge neurons and fact-checking)")
    for phase in PHASES.values():
        fields = dataclasses.fields(phase.Settings)
        if fields:
            group = p.add_argument_group(f"phase {phase.name}", (phase.Settings.__doc__ or "").strip().splitlines()[0])
            for f in fields:
                _add_setting(group, f.name, f)
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="where the per-fact work runs: here, or on Ray workers (pip install 'kn[ray]')")
    p.add_argument("--workers", type=positive_int, default=None, help="Ray workers (default 2), each loads the model")
    p.add_argument("--address", default=None,
                   help="the Ray cluster to use (e.g. 10.0.0.5:6379, or auto); default: a local one for this run")
    p.add_argument("--fresh", action="store_true",
                   help="start anew instead of resuming the run in --out, which is moved aside whole to "
                        "--out.replaced-<UTC time> (nothing is deleted)")
    _add_keep_freed_memory(p)
    p.set_defaults(func=cmd_run)


def _add_setting(p, name: str, f) -> None:
    """A phase setting's flag, from its field: --name-with-dashes (--no-name for one on by default),
    its help text, its default and its parser (`kn.runs.phases.setting`)."""
    from .runs.phases.setting import fraction as is_fraction, fraction_or_none

    flag, meta, default = "--" + name.replace("_", "-"), f.metadata, f.default
    help = meta.get("help", "")
    if isinstance(default, bool):
        if default:
            p.add_argument("--no-" + flag[2:], dest=name, action="store_const", const=False, default=None,
                           help=f"do not: {help[0].lower()}{help[1:]}")
        else:
            p.add_argument(flag, dest=name, action="store_const", const=True, default=None, help=help)
        return
    check = meta.get("check")
    parse = meta.get("cli_type") or (fraction if check in (is_fraction, fraction_or_none) else
                                     positive_int if getattr(check, "low", None) == 1 else
                                     int if isinstance(default, int) else float)
    p.add_argument(flag, dest=name, type=parse, nargs=meta.get("nargs"), default=None,
                   help=help if default is None else f"{help} (default {default})")


def _add_baseline(p) -> None:
    from .baselines import BASELINES
    from .settings import MULTIPLIERS

    p.add_argument("--baseline", choices=list(BASELINES), default=None,
                   help="IG baseline: zero (Dai et al., default), amig (Chen et al.; kn's convention), amig-all "
                        "(every position corrupted, as their code)")
    p.add_argument("--multiplier", choices=list(MULTIPLIERS), default=None,
                   help="IG times x-b (default, the definition) or x (the AMIG reference code's)")


def _add_method(p, default: str = "ig") -> None:
    """--method (a kind of `kn.settings.KINDS`), and IG's --steps, --rule, --screen and --head-dtype (None: IG's
    defaults)."""
    from .quadrature import RULES
    from .settings import HEAD_DTYPES, KINDS

    p.add_argument("--method", choices=list(KINDS), default=default,
                   help=f"how neurons are scored (default {default}): " + ", ".join(
                       f"{k} (kn.{c.__name__})" for k, c in KINDS.items()))
    p.add_argument("--steps", type=positive_int, default=None, help=f"IG path points (default {KINDS['ig']().steps})")
    p.add_argument("--rule", choices=list(RULES), default=None,
                   help=f"IG quadrature rule (default {KINDS['ig']().rule})")
    p.add_argument("--screen", type=positive_int, default=None, metavar="K",
                   help="two-stage IG: only on the K layers where gradient x activation (one forward and backward "
                        "per prompt) peaks (default: every layer)")
    p.add_argument("--head-dtype", choices=list(HEAD_DTYPES), default=None,
                   help="IG's output-layer products: float32 (exact logits; the default) or bfloat16 (about 2e-3 of "
                        "the largest gradient, a bfloat16 rounding's size; twice as fast on CPUs with AVX512-BF16)")
    p.add_argument("--fast", action="store_true",
                   help="IG at the model's fast default (kn.fast_settings: the cheapest rule and points whose "
                        "knowledge neurons and effects agree with the paper setting's in the recorded agreement "
                        "study; packaged models only)")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _resume_hint(out: str) -> str:
    """What an interrupted `kn run` kept: its finished facts once the run exists, else the relations
    the fact selection finished (`kn.data.shared_selection.Progress`)."""
    from pathlib import Path

    from .runs.directory import CONFIG

    kept = (f"every finished fact is in {out}'s journal" if (Path(out) / CONFIG).is_file() else
            "the relations whose known facts were found are kept")
    return f"; {kept}: run the same command again to resume"


@contextlib.contextmanager
def _sigterm_interrupts():
    """Inside, SIGTERM (`kill`, a job scheduler's stop) is a KeyboardInterrupt, so a run stops as on Ctrl-C:
    the journal closed and the session's seconds kept. Outside the main thread (a test's), nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kn", description="Knowledge neurons in transformer language models.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--model", "-m", default=DEFAULT_MODEL,
                       help=f"packaged ({', '.join(PACKAGED)}), local directory or hub id (default {DEFAULT_MODEL})")
        p.add_argument("--device", default=None)
        p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                       help="the weights' dtype (bfloat16: faster on CPUs with AVX512-BF16; scores stay float32)")
        p.add_argument("--threads", type=positive_int, default=None)

    p = sub.add_parser("probe", help="top-k predictions for a prompt")
    p.add_argument("prompt")
    p.add_argument("-k", type=positive_int, default=10)
    common(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("locate", help="knowledge neurons of a fact from paraphrase prompts")
    p.add_argument("prompts", nargs="+")
    p.add_argument("--answer", "-a", required=True)
    _add_method(p)
    _add_baseline(p)
    p.add_argument("--threshold", type=fraction, default=0.2)
    p.add_argument("--share", type=fraction, default=0.7)
    p.add_argument("--min-prompts", type=positive_int, default=3)
    p.add_argument("--verify", action="store_true", help="also suppress / amplify them")
    _add_keep_freed_memory(p)
    common(p)
    p.set_defaults(func=cmd_locate)

    _add_run(sub.add_parser("run", help="locate and verify knowledge neurons over a fact dataset (kill-safe, "
                                        "resumable)"))
    common(sub.choices["run"])

    p = sub.add_parser("coverage", help="per language: facts a model can be asked, single- vs multi-token answers, "
                                        "facts it knows")
    p.add_argument("--data", default="builtin", help="builtin, pararel:PATH or bmlama:PATH")
    p.add_argument("--languages", default=None, help="comma-separated language codes (default: every one in the data)")
    p.add_argument("--sample", type=int, default=200, help="usable facts probed per language, seeded (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-probe", action="store_true", help="count the answers' tokens only; do not probe the model")
    p.add_argument("--sentence", action="store_true",
                   help="causal LMs: also take the templates whose object is not last (verb-final languages), "
                        "each scored by the log-probability of the sentence from the object on")
    p.add_argument("--record", default=None,
                   help="record the table with its provenance here (for book/results): an empty directory or "
                        "one kn recorded before")
    common(p)
    p.set_defaults(func=cmd_coverage)

    p = sub.add_parser("calibrate", help="the cheapest IG quadrature no less accurate than the paper's on a few "
                                         "facts' prompts (kn.calibrate), optionally recorded")
    p.add_argument("--data", default="builtin", help="builtin, pararel:PATH or bmlama:PATH")
    p.add_argument("--relations", default=None, help="comma-separated relation ids (default: all)")
    p.add_argument("--languages", default="en", help="comma-separated language codes: a prompt per fact in each")
    p.add_argument("--facts-per-relation", type=positive_int, default=1, help="seeded sample per relation")
    p.add_argument("--known", action="store_true", help="only facts the model knows (gold in its top 10 on at "
                                                        "least half the prompts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--against", default="riemann_left:20", help="the setting to be no worse than, RULE:STEPS")
    p.add_argument("--exact", type=positive_int, default=64, help="Gauss-Legendre nodes of the exact integral")
    _add_baseline(p)
    p.add_argument("--record", default=None, help="record the tables with their provenance here (for book/results)")
    common(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("convergence", help="how many IG steps: every quadrature rule at several point counts against "
                                           "an exact integral on real facts (kn.convergence), optionally recorded")
    p.add_argument("--out", required=True, help="the study's directory (its journal: run again to resume)")
    p.add_argument("--models", default="gemma-3-270m,smollm2-135m", help="comma-separated models")
    p.add_argument("--facts", type=positive_int, default=30, help="known facts per model")
    p.add_argument("--prompts", type=positive_int, default=3, help="prompts per fact")
    p.add_argument("--steps", default="2,4,8,16,32,64", help="comma-separated point counts of every rule")
    p.add_argument("--exact", type=positive_int, default=128, help="Gauss-Legendre nodes of the exact integral")
    p.add_argument("--pararel", default=None, help="a PARAREL directory: half the facts come from it")
    p.add_argument("--pararel-relations", default=None,
                   help="PARAREL relations to draw from (default: the object-last ones of the PARAREL chapter)")
    p.add_argument("--cross-facts", type=int, default=3,
                   help="facts whose first prompt cross-checks the exact integral")
    p.add_argument("--record", default=None, help="record the tables with their provenance here (for book/results)")
    p.set_defaults(func=cmd_convergence)

    p = sub.add_parser("record", help="record a finished run's tables with their provenance (for book/results)")
    p.add_argument("run_dir")
    p.add_argument("dest", help="an empty (or new) directory, or one kn recorded before: only its files are replaced")
    p.add_argument("--command", dest="command_line", default=None,
                   help="the command that made the run, for a run that did not record it (made by the Python API "
                        "without command=, or by an older kn); a run made by kn run records its own")
    p.add_argument("--seconds", type=float, default=None,
                   help="wall-clock seconds (default: the run's sessions', else the facts' own)")
    p.add_argument("--commit", default=None, help="kn commit the run used (default: the one at the run's start, "
                                                   "else this checkout's)")
    p.set_defaults(func=cmd_record)

    args = parser.parse_args(argv)
    args.invocation = "kn " + shlex.join(sys.argv[1:] if argv is None else argv)  # as given, for the run's sessions
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.command == "locate" and len(args.prompts) < args.min_prompts:
        parser.error(f"locate needs at least --min-prompts={args.min_prompts} paraphrases, got {len(args.prompts)}")
    try:
        with _sigterm_interrupts():
            args.func(args)
    except KeyboardInterrupt:
        print("kn: interrupted" + (_resume_hint(args.out) if args.command == "run" else ""), file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # bad input (kn.checks.ArgumentError), missing data or model: one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"kn: error: {first}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
