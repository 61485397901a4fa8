"""Control facts for verification: a random fact of another relation (the paper's control) and of the
same relation, each picked by an RNG seeded on the fact id, so a resumed run picks the same ones."""
from __future__ import annotations

import random
from typing import Sequence

from ...data.prepare import prepare_fact

DRAWS = 64  # random draws among the other relations' facts before a seeded scan


class Controls:
    """Seeded control facts: another relation's (usable by the model) and the same relation's."""

    def __init__(self, lm, facts: Sequence, language: str, seed: int, *, sentence: bool = False):
        """sentence: the run's locate setting (a control fact is prepared as the run's own facts are)."""
        self.lm, self.language, self.seed, self.sentence = lm, language, seed, sentence
        self.ids = sorted(f.fact_id for f in facts)
        self.by_id = {f.fact_id: f for f in facts}
        self._usable: dict[str, tuple[list[str], list[str]] | None] = {}

    def prompts(self, fact_id: str) -> tuple[list[str], list[str]] | None:
        """The fact's prompts and their answers, None if the model cannot be asked it."""
        if fact_id not in self._usable:
            fact = self.by_id[fact_id]
            p = prepare_fact(fact, self.lm, self.language, sentence=self.sentence) if fact.has(self.language) else None
            self._usable[fact_id] = (list(p.prompts), list(p.answers)) if p is not None and p.usable else None
        return self._usable[fact_id]

    def other(self, fact_id: str, relation: str) -> str | None:
        """A usable fact of another relation."""
        rng = random.Random(f"{self.seed}|other|{fact_id}")
        cands = [i for i in self.ids if self.by_id[i].relation != relation]
        for _ in range(min(len(cands), DRAWS)):  # random draws, then a seeded scan
            c = cands[rng.randrange(len(cands))]
            if self.prompts(c) is not None:
                return c
        rng.shuffle(cands)
        return next((c for c in cands if self.prompts(c) is not None), None)

    def same(self, fact_id: str, located: Sequence[str]) -> str | None:
        """Another located fact of the same relation."""
        cands = sorted(i for i in located if i != fact_id)
        return random.Random(f"{self.seed}|same|{fact_id}").choice(cands) if cands else None
