"""The fast default of each model the agreement study covers (issue 31): the cheapest attribution
setting whose knowledge-neuron sets and effects agree with the paper setting's (IG, riemann_left, 20
points, every layer) over the study's known PARAREL facts: median Jaccard >= 0.9, mean suppression and
amplification within 10% (`kn.agreement`), with float32 weights (bfloat16 weights are a choice of their own,
`--dtype`, measured beside it). The table holds what the recorded study
(book/results/agreement, `bash book/results/record.sh agreement PARAREL_DIR`) picks; a test reads the
recordings and checks it. Another model has none: measure one (`kn calibrate` for the quadrature, the
agreement study for the sets) or keep the paper's setting."""
from __future__ import annotations

from dataclasses import dataclass

from . import checks
from .settings import IG


@dataclass(frozen=True)
class FastDefault:
    """A model's fast default: IG's rule, points and screen; `setting`: its name in the agreement study."""
    setting: str
    rule: str
    steps: int
    screen: int | None = None

    @property
    def attribution(self) -> IG:
        return IG(rule=self.rule, steps=self.steps, screen=self.screen)


FAST: dict[str, FastDefault] = {
    "gemma-3-270m": FastDefault("gl2", "gauss_legendre", 2),
}


def fast_setting(model: str) -> FastDefault:
    """The fast default of a packaged model (`FAST`); an ArgumentError naming the models that have one."""
    if model not in FAST:
        raise checks.ArgumentError(
            f"no fast default is measured for {model!r} (the agreement study covers {', '.join(FAST)}); pass "
            "--rule/--steps yourself (kn calibrate picks a rule on a few of your prompts) or leave out --fast "
            "for the paper's setting")
    return FAST[model]
