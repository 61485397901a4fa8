"""Command line: `kn probe "Paris is the capital of"`, `kn locate -a France PROMPT ...`."""
from __future__ import annotations

import argparse
import logging
import sys
import time

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
    return load(args.model, device=args.device)


def cmd_probe(args) -> None:
    from .probing import probe

    lm = _load(args)
    preds = probe(lm, args.prompt, k=args.k)
    print(f"{lm.name}: {args.prompt!r}")
    print(_table([(i + 1, repr(p.token), f"{p.prob:.4f}") for i, p in enumerate(preds)], ("rank", "token", "prob")))


def cmd_locate(args) -> None:
    import torch

    from .attribution import attribute
    from .locate import coarse, refine
    from .verify import verify

    lm = _load(args)
    t0 = time.perf_counter()
    scores, sets = [], []
    for p in args.prompts:
        s = attribute(lm, p, args.answer, steps=args.steps)
        scores.append(s)
        sets.append(coarse(s, args.threshold))
        print(f"  {len(sets[-1]):3d} neurons pass the coarse filter: {p!r}", file=sys.stderr)
    neurons = refine(sets, args.share, args.min_prompts)
    mean = torch.stack(scores).mean(0)
    counts = {n: sum(n in s for s in sets) for n in neurons}
    print(f"{lm.name}: {len(neurons)} knowledge neurons of {args.answer!r} from {len(args.prompts)} prompts "
          f"({time.perf_counter() - t0:.1f} s)")
    print(_table([(l, i, f"{float(mean[l, i]):.4f}", f"{counts[(l, i)]}/{len(sets)}") for l, i in neurons],
                 ("layer", "neuron", "mean score", "prompts")))
    if args.verify and neurons:
        v = verify(lm, args.prompts, args.answer, neurons)
        print(f"suppress: {v.fact.suppression:+.1%}   amplify x2: {v.fact.amplification:+.1%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kn", description="Knowledge neurons in transformer language models.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--model", "-m", default=DEFAULT_MODEL,
                       help=f"packaged ({', '.join(PACKAGED)}), local directory or hub id (default {DEFAULT_MODEL})")
        p.add_argument("--device", default=None)
        p.add_argument("--threads", type=int, default=None)

    p = sub.add_parser("probe", help="top-k predictions for a prompt")
    p.add_argument("prompt")
    p.add_argument("-k", type=int, default=10)
    common(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("locate", help="knowledge neurons of a fact from paraphrase prompts")
    p.add_argument("prompts", nargs="+")
    p.add_argument("--answer", "-a", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threshold", type=float, default=0.2)
    p.add_argument("--share", type=float, default=0.7)
    p.add_argument("--min-prompts", type=int, default=3)
    p.add_argument("--verify", action="store_true", help="also suppress / amplify them")
    common(p)
    p.set_defaults(func=cmd_locate)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.command == "locate" and len(args.prompts) < args.min_prompts:
        parser.error(f"locate needs at least --min-prompts={args.min_prompts} paraphrases, got {len(args.prompts)}")
    try:
        args.func(args)
    except ValueError as err:  # bad input: one readable line, no traceback
        print(f"kn: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
