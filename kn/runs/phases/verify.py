"""Phase "verify" (Dai et al. 2022, section 4.2): each fact's knowledge neurons suppressed and
amplified on its own prompts and, with controls, on a fact of another relation and of the same one.

Record: ``verify`` = {fact_id, relation, fact / other / same = {fact_id, before, suppressed,
amplified} (P(gold) per prompt; other / same may be null)}, or {fact_id, relation, error}.
Relation columns are ratios of means over the relation's verified facts.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

from ...verification import effects
from ..state import State
from ...interventions import AMPLIFY_FACTOR, SUPPRESS_FACTOR
from .base import Phase, error_of, mean, ratio, record
from .controls import Controls
from .locate import answers_of, knowledge_neurons, located, located_facts
from .setting import phase_settings, boolean, number, setting

log = logging.getLogger(__name__)

CONTROLS = ("other", "same")
EFFECT = ("p_before", "p_suppressed", "p_amplified", "suppression", "amplification")


@phase_settings
class VerifySettings:
    """How knowledge neurons are verified (Dai et al. 2022, section 4.2)."""

    controls: bool = setting(True, "also verify on a random fact of another relation and of the same relation "
                                   "(chosen by the seed)", check=boolean)
    suppress_factor: float = setting(SUPPRESS_FACTOR, "suppression multiplies the neurons' activations by this", check=number)
    amplify_factor: float = setting(AMPLIFY_FACTOR, "amplification multiplies the neurons' activations by this", check=number)



class Verify(Phase):
    name = "verify"
    Settings = VerifySettings
    fact_record = "verify"
    needs = ("locate",)
    fact_columns = ("p_suppressed", "p_amplified", "suppression", "amplification",
                    *[f"control_{c}_{k}" for c in CONTROLS for k in ("fact", *EFFECT)])
    prompt_columns = ("p_suppressed", "p_amplified")
    relation_columns = ("facts_verified", "p_before", "suppression", "amplification",
                        *[f"control_{c}_{k}" for c in CONTROLS for k in ("suppression", "amplification")])
    follows = {"facts_verified": "facts_with_neurons"}
    headline = ("suppression", "amplification",
                *[f"control_{c}_{k}" for c in CONTROLS for k in ("suppression", "amplification")])

    summary = (("suppression", "suppress", "+.1%"), ("amplification", "amplify", "+.1%"),
               ("control_other_suppression", "ctrl suppress", "+.1%"),
               ("control_other_amplification", "ctrl amplify", "+.1%"))


    # -- the work ------------------------------------------------------------------------------
    def start(self, lm, facts: Sequence) -> None:
        self._lm, self._facts, self._controls = lm, facts, {}

    def controls(self, language: str) -> Controls | None:
        """The seeded control facts in `language` (None without controls)."""
        if not self.settings.controls:
            return None
        if language not in self._controls:
            self._controls[language] = Controls(self._lm, self._facts, language, self.run.seed,
                                                sentence=self.run.of("locate").sentence)
        return self._controls[language]

    def wants(self, fact_id: str, state: State) -> bool:
        rec = located(state, fact_id)
        return rec is not None and bool(knowledge_neurons(state, fact_id, rec["relation"]))

    def run_fact(self, lm, fact, state: State) -> dict:
        rec = located(state, fact.fact_id)
        out = record(self.fact_record, fact_id=rec["fact_id"], relation=rec["relation"])
        neurons = knowledge_neurons(state, rec["fact_id"], rec["relation"])
        try:
            groups = {"fact": (rec["fact_id"], rec["prompts"], answers_of(rec))}
            out["other"] = out["same"] = None
            controls = self.controls(state.language)
            if controls is not None:
                o = controls.other(rec["fact_id"], rec["relation"])
                if o is not None:
                    groups["other"] = (o, *controls.prompts(o))
                same = controls.same(rec["fact_id"], located_facts(state, rec["relation"]))
                if same is not None:
                    s = located(state, same)
                    groups["same"] = (same, s["prompts"], answers_of(s))
            # the fact's and its controls' prompts in one batched measurement per condition
            for key, e in zip(groups, self._effects(lm, [(p, a) for _, p, a in groups.values()], neurons)):
                out[key] = {"fact_id": groups[key][0], **e}
        except Exception as err:
            log.warning("verifying %s failed: %s: %s", rec["fact_id"], type(err).__name__, err)
            out = {k: out[k] for k in ("type", "fact_id", "relation")} | {"error": error_of(err)}
        return out

    def _effects(self, lm, groups: Sequence[tuple[Sequence[str], Sequence[str]]], neurons) -> list[dict]:
        """P(gold) per prompt (each with its answer) of each (prompts, answers) group before, and with the
        neurons multiplied by the suppress / amplify factors."""
        s = self.settings
        return [{"before": e.before.tolist(), "suppressed": e.suppressed.tolist(), "amplified": e.amplified.tolist()}
                for e in effects(lm, groups, neurons, s.amplify_factor, s.suppress_factor)]

    # -- the tables ----------------------------------------------------------------------------
    def fact_row(self, fact_id: str, state: State) -> dict:
        v = state.get(self.fact_record, fact_id) or {}
        row = _effect_columns("", v.get("fact"))
        del row["p_before"]  # the fact's own P(gold) before is the locate phase's column
        for c in CONTROLS:
            e = v.get(c)
            row |= {f"control_{c}_fact": e and e["fact_id"], **_effect_columns(f"control_{c}_", e)}
        return row

    def prompt_row(self, fact_id: str, index: int, state: State) -> dict:
        eff = (state.get(self.fact_record, fact_id) or {}).get("fact")
        return {"p_suppressed": eff["suppressed"][index] if eff else math.nan,
                "p_amplified": eff["amplified"][index] if eff else math.nan}

    def relation_row(self, relation: str, facts, state: State) -> dict:
        ver = facts[facts.suppression.notna()]
        row = {"facts_verified": len(ver), "p_before": mean(ver.p_before),
               "suppression": ratio(ver.p_before, ver.p_suppressed),
               "amplification": ratio(ver.p_before, ver.p_amplified)}
        for c in CONTROLS:
            cv = facts[facts[f"control_{c}_suppression"].notna()]
            row[f"control_{c}_suppression"] = ratio(cv[f"control_{c}_p_before"], cv[f"control_{c}_p_suppressed"])
            row[f"control_{c}_amplification"] = ratio(cv[f"control_{c}_p_before"], cv[f"control_{c}_p_amplified"])
        return row


def _effect_columns(prefix: str, e: dict | None) -> dict:
    """Mean P(gold) before / suppressed / amplified and the two relative changes of one effect record."""
    return {f"{prefix}p_before": mean(e and e["before"]), f"{prefix}p_suppressed": mean(e and e["suppressed"]),
            f"{prefix}p_amplified": mean(e and e["amplified"]),
            f"{prefix}suppression": ratio(e["before"], e["suppressed"]) if e else math.nan,
            f"{prefix}amplification": ratio(e["before"], e["amplified"]) if e else math.nan}
