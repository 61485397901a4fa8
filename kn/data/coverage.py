"""What a model can do with a multilingual fact set, per language: how many facts it can be asked
(a causal LM needs a template whose object comes last, or, with `sentence`, takes the others as
sentence targets), how many answers are one token or several, and how many facts it knows (gold in
its top-k on at least half the prompts, a sentence target's gold sentence above every distractor's,
on a seeded sample)."""
from __future__ import annotations

import random
from typing import Sequence

from .prepare import filter_known, prepare_facts

COLUMNS = ["language", "facts", "no_prompt", "unrepresentable", "usable", "usable_share", "sentence_target",
           "single_token", "multi_token", "probed", "known", "known_share"]


def coverage(facts, lm, languages: Sequence[str] | None = None, *, known: bool = True, sample: int | None = 200,
             k: int = 10, min_fraction: float = 0.5, seed: int = 0, sentence: bool = False, progress: bool = False):
    """A row per language (`COLUMNS`): facts with a version in it; dropped for having no prompt the
    model can take (a causal LM: no object-last template, unless `sentence`) or an answer its
    tokenizer cannot write; usable ones (their share of the facts), those with a sentence-target prompt
    (`sentence`: the object not last), single- and multi-token; with `known`, how many of a seeded
    sample of `sample` usable facts (None: all) the model knows (`filter_known`: a sentence target by
    its gold sentence's margin over the distractors). progress: a bar per language over the probed facts."""
    import pandas as pd
    from tqdm.auto import tqdm

    from ..probing import answer_logprobs, probe

    def score(q, answers):
        return answer_logprobs(lm, q, answers)

    rows = []
    for lang in languages or facts.languages:
        having = [f for f in facts if f.has(lang)]
        prepared = list(zip(having, prepare_facts(having, lm, lang, sentence=sentence)))
        ok = [p for _, p in prepared if p is not None and p.usable]
        row = {"language": lang, "facts": len(prepared), "no_prompt": sum(p is None or not p.prompts for _, p in prepared),
               "unrepresentable": sum(p is not None and bool(p.prompts) and not p.representable for _, p in prepared),
               "usable": len(ok), "usable_share": len(ok) / len(prepared) if prepared else float("nan"),
               "sentence_target": sum("sentence" in p.targets for p in ok),
               "single_token": sum(p.single_token for p in ok), "multi_token": sum(not p.single_token for p in ok)}
        if known and ok:
            chosen = ok if sample is None or sample >= len(ok) else random.Random(f"{seed}|{lang}").sample(ok, sample)
            kept = sum(len(filter_known([p], lambda q: probe(lm, q, k=k), min_fraction=min_fraction, score=score).kept)
                       for p in tqdm(chosen, desc=f"{lang}: probing", unit="fact", disable=not progress, leave=False))
            row |= {"probed": len(chosen), "known": kept, "known_share": kept / len(chosen)}
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def gaps(table, reference: str = "en"):
    """Each language's usable and known shares of a `coverage` table beside `reference`'s: a row per
    language with usable_share, known_share and their differences from the reference in percentage
    points (usable_gap, known_gap; NaN where a share was not measured)."""
    import pandas as pd

    t = table.set_index("language") if "language" in table.columns else table
    if reference not in t.index:
        raise ValueError(f"reference language {reference!r} is not in the table; it has {', '.join(map(str, t.index))}")
    usable = t["usable_share"] if "usable_share" in t else t["usable"] / t["facts"]
    known = t["known_share"] if "known_share" in t else pd.Series(float("nan"), index=t.index)
    out = pd.DataFrame({"usable_share": usable.astype(float), "known_share": known.astype(float)})
    out["usable_gap"] = (out.usable_share - out.usable_share[reference]) * 100
    out["known_gap"] = (out.known_share - out.known_share[reference]) * 100
    return out.rename_axis("language").reset_index()
