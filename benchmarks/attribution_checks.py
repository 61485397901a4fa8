"""The attribution benchmark's agreement checks (benchmarks/bench_attribution.py): kn fast vs kn
reference on every model, kn vs the package on BERT (its site is kn's there), relative = max|a - b| /
max|b| over the whole [layers, width] matrix. `check_fast_vs_reference` is also what
tests/unit/test_benchmark_checks.py runs.
"""
from __future__ import annotations

from pathlib import Path

from attribution_models import STEPS, TINY_LABEL, LABEL, build_model, prompts, rel_err
from attribution_sides import kn_lm

REL_TOL_PEER = 1e-4  # kn vs the package (BERT, linspace)
REL_TOL_REF = 1e-4  # kn fast vs reference, real-size models
REL_TOL_REF_TINY = 1e-5  # kn fast vs reference, tiny models (the kernel's own contract)


def check_fast_vs_reference(family: str, tiny: bool = True, n_prompts: int | None = None,
                            rule: str = "linspace", steps: int = STEPS) -> list[float]:
    """kn fast path vs kn reference path, per prompt: relative differences of the score matrices."""
    model, tok = build_model(family, tiny)
    lm = kn_lm(model, tok, f"{'tiny-' if tiny else ''}{family}")
    import kn  # kn_lm has put the repository on the path
    out = []
    for prompt, answer in prompts(family, n_prompts):
        fast = kn.attribute(lm, prompt, answer, steps=steps, rule=rule)
        ref = kn.attribute(lm, prompt, answer, steps=steps, rule=rule, reference=True)
        if not float(ref.abs().max()) > 0:
            raise AssertionError(f"{family}: reference scores are all zero for {prompt!r}")
        out.append(rel_err(fast, ref))
    return out



def agreement(row: dict, scores: dict[str, list[Path]], family: str, use_peer: bool) -> dict:
    """The score comparisons of one model's row, from the scores each side saved on its first repetition."""
    import torch

    fast = [torch.load(p) for p in scores["fast"]]
    ref = [torch.load(p) for p in scores["ref"]]
    row["fast_vs_ref"] = max(rel_err(a, b) for a, b in zip(fast, ref))
    row["fast_vs_ref_each"] = [rel_err(a, b) for a, b in zip(fast, ref)]
    if use_peer and family == "bert":
        peer = [torch.load(p) for p in scores["peer"]]
        row["peer_vs_kn_each"] = [rel_err(a, b) for a, b in zip(fast, peer)]
        row["peer_vs_kn"] = max(row["peer_vs_kn_each"])
        row["peer_vs_kn_ref"] = max(rel_err(a, b) for a, b in zip(ref, peer))
        row["peer_shape"] = list(peer[0].shape)
    row["kn_shape"] = list(fast[0].shape)
    return row


def check_lines(rows: list[dict], args) -> tuple[list[str], bool]:
    """The report's checks (markdown lines) and whether every one passed."""
    ok = True
    lines = ["", "Checks (relative = max|a - b| / max|b| over the full [layers, width] matrix, worst prompt):", ""]
    tol_ref = REL_TOL_REF_TINY if args.tiny else REL_TOL_REF
    for r in rows:
        name = TINY_LABEL[r["family"]] if r["tiny"] else LABEL[r["family"]]
        if "weights_rel" in r:
            lines.append(f"- {name}: same weights in both environments, plain P(answer) agrees to "
                         f"{r['weights_rel']:.1e}")
        if "peer_vs_kn" in r:
            good = r["peer_vs_kn"] <= REL_TOL_PEER and r["peer_shape"] == r["kn_shape"]
            ok &= good
            lines.append(f"- {name}: kn (fast, linspace) vs the package: {r['peer_vs_kn']:.1e} "
                         f"(kn reference vs package {r['peer_vs_kn_ref']:.1e}; shape {r['kn_shape']}) "
                         f"{'PASS' if good else 'FAIL'} (<= {REL_TOL_PEER:g})")
        elif r["family"] == "bert":
            lines.append(f"- {name}: kn vs the package: SKIPPED ({args.peer_skip_reason})")
        good = r["fast_vs_ref"] <= tol_ref
        ok &= good
        lines.append(f"- {name}: kn fast vs kn reference: {r['fast_vs_ref']:.1e} "
                     f"{'PASS' if good else 'FAIL'} (<= {tol_ref:g})")
    return lines, ok
