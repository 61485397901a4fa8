"""Facts made ready for one model: which prompts it can use, how its tokenizer splits the answer,
and which facts it knows (book chapter "Facts and prompts"; Dai et al. 2022, sec. 4.1).

Model-agnostic: `prepare` needs only an object with ``.masked`` (bool) and ``.tokenizer`` (callable as
``tokenizer(text, add_special_tokens=False)["input_ids"]`` or with ``.encode``), such as `kn.LM`;
`filter_known` needs only a ``probe(prompt) -> top-k tokens`` callable. Nothing here imports torch.

- Masked LMs use every template, the object slot written as ``[MASK]`` (what kn's kernels expect).
- Causal LMs keep the templates whose object slot ends the sentence; the prompt is the text before
  it, without trailing space, and the answer carries the space (" Paris").
- The answer's tokens are found by tokenizing prompt + answer together and removing the prompt's
  tokens, so spacing and merges come out as the model sees them; single/multi-token is recorded.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import templates as T
from .schema import Fact

log = logging.getLogger(__name__)


# -- tokenizer duck typing -------------------------------------------------------------------
def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` without special tokens (HF-style call, else `.encode`)."""
    if callable(tokenizer):
        try:
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])
        except (TypeError, KeyError):
            pass
    if hasattr(tokenizer, "encode"):
        try:
            return list(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:
            return list(tokenizer.encode(text))
    raise TypeError("the tokenizer needs __call__(text, add_special_tokens=False) or .encode(text)")


def decode_token(tokenizer: Any, token_id: int) -> str:
    """Text of one token id (`.decode([id])`, else `.convert_ids_to_tokens`)."""
    if hasattr(tokenizer, "decode"):
        return tokenizer.decode([token_id])
    return tokenizer.convert_ids_to_tokens([token_id])[0]


def continuation_ids(tokenizer: Any, left: str, answer: str) -> tuple[list[int], bool]:
    """Tokens of `answer` (a `templates.Continuation`: separator included, taken as given) as it
    follows `left`, and whether the split was clean.

    Clean: the ids of `left` are a prefix of the ids of ``left + answer``, and the answer's ids are the
    rest. Otherwise the tokenizer merged across the boundary, and the answer is tokenized on its own.
    """
    left = left.rstrip()
    head = encode(tokenizer, left) if left else []
    full = encode(tokenizer, left + answer)
    if full[: len(head)] == head:
        return full[len(head):], True
    return encode(tokenizer, answer), False


def unknown_tokens(tokenizer: Any, ids: Sequence[int]) -> bool:
    """True if `ids` is empty or holds the tokenizer's unknown token (the answer cannot be written)."""
    return _unknown(getattr(tokenizer, "unk_token_id", None), ids)


def _unknown(unk: int | None, ids: Sequence[int]) -> bool:
    return not ids or (unk is not None and unk in ids)


# -- prepared facts --------------------------------------------------------------------------
@dataclass(frozen=True)
class PreparedFact:
    """One fact in one language, ready for one model.

    prompts:        cloze texts with ``[MASK]`` (masked LM) or prefixes before the object (causal LM).
    answers:        per prompt, the text that fills the slot as it follows the text before it (a
                    `templates.Continuation`: " Paris" after "is", "Paris" after "l'" or "是"); the
                    kernels take each prompt with its answer as given.
    answer_ids:     tokens of the gold object after the first prompt (a sentence target's tail
                    aside); `consistent` says whether every prompt yields the same tokens.
    distractor_ids: tokens of each same-relation distractor after the first prompt.
    representable:  no prompt's answer tokens include the tokenizer's unknown token.
    """

    fact: Fact
    language: str
    masked: bool
    prompts: tuple[str, ...]
    answers: tuple[T.Continuation, ...]
    answer_ids: tuple[int, ...]
    gold_token: str
    consistent: bool
    clean_split: bool
    representable: bool = True
    distractors: tuple[str, ...] = ()
    distractor_ids: tuple[tuple[int, ...], ...] = field(default=(), repr=False)

    @property
    def fact_id(self) -> str:
        return self.fact.fact_id

    @property
    def relation(self) -> str:
        return self.fact.relation

    @property
    def object(self) -> str:
        return self.fact.object[self.language]

    @property
    def n_answer_tokens(self) -> int:
        return len(self.answer_ids)

    @property
    def single_token(self) -> bool:
        return len(self.answer_ids) == 1

    @property
    def targets(self) -> tuple[str, ...]:
        """Per prompt, what it scores: "next_token" (the object ends the prompt's sentence) or
        "sentence" (the object and the rest of the sentence after it; `Fact.causal_pairs`)."""
        return tuple(getattr(a, "target", T.NEXT_TOKEN) for a in self.answers)

    @property
    def usable(self) -> bool:
        """The model can be asked this fact: at least one prompt, and an answer its tokenizer can write."""
        return bool(self.prompts) and self.representable

    @property
    def gold_id(self) -> int:
        """First answer token: the one the model must rank first (Dai et al.'s gold token)."""
        return self.answer_ids[0]


class Prepared(Sequence[PreparedFact]):
    """Prepared facts plus what was dropped and why; `counts` is a pandas table per relation/language."""

    def __init__(self, items: Iterable[PreparedFact], dropped: dict[tuple[str, str], str] | None = None,
                 totals: Counter | None = None):
        self._items = tuple(items)
        self.dropped = dict(dropped or {})  # (fact_id, language) -> reason
        self._totals = Counter(totals) if totals is not None else Counter(
            (p.relation, p.language) for p in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[PreparedFact]:
        return iter(self._items)

    def __getitem__(self, i):
        return Prepared(self._items[i]) if isinstance(i, slice) else self._items[i]

    def __repr__(self) -> str:
        return f"Prepared({len(self)} facts kept, {len(self.dropped)} dropped)"

    def to_frame(self):
        """pandas DataFrame, one row per prepared fact."""
        import pandas as pd

        cols = ["fact_id", "relation", "language", "n_prompts", "object", "n_answer_tokens",
                "single_token", "gold_token", "consistent"]
        return pd.DataFrame([{
            "fact_id": p.fact_id, "relation": p.relation, "language": p.language,
            "n_prompts": len(p.prompts), "object": p.object, "n_answer_tokens": p.n_answer_tokens,
            "single_token": p.single_token, "gold_token": p.gold_token, "consistent": p.consistent,
        } for p in self._items], columns=cols)

    @property
    def counts(self):
        """pandas DataFrame per (relation, language): facts in, kept, dropped, single- and multi-token."""
        import pandas as pd

        kept: dict[tuple[str, str], Counter] = defaultdict(Counter)
        for p in self._items:
            c = kept[(p.relation, p.language)]
            c["kept"] += 1
            c["single_token" if p.single_token else "multi_token"] += 1
        rows = []
        for (rel, lang), total in self._totals.items():
            c = kept.get((rel, lang), Counter())
            rows.append({"relation": rel, "language": lang, "facts": total, "kept": c["kept"],
                         "dropped": total - c["kept"], "single_token": c["single_token"],
                         "multi_token": c["multi_token"]})
        return pd.DataFrame(rows, columns=["relation", "language", "facts", "kept", "dropped",
                                           "single_token", "multi_token"])


def _slot_pairs(fact: Fact, language: str, masked: bool, mask: str,
                sentence: bool = False) -> list[tuple[str, str, T.Continuation]]:
    """(prompt, left context, answer as it continues the left context) per usable template."""
    obj = fact.object[language]
    out = []
    if masked:
        for p in fact.prompts(language):
            head = p.split(T.OBJECT, 1)[0]
            left = head.rstrip()
            out.append((T.cloze(p, mask), left, T.Continuation((T.answer_separator(head) if left else "") + obj)))
    else:
        for prefix, answer in fact.causal_pairs(language, sentence=sentence):
            out.append((prefix, prefix, T.Continuation(answer, getattr(answer, "tail", ""))))
    return out


def prepare_fact(fact: Fact, model: Any, language: str = "en", *, mask: str = T.MASK,
                 sentence: bool = False) -> PreparedFact | None:
    """One fact for `model` (duck-typed: ``.masked``, ``.tokenizer``); None if no template fits.

    sentence: a causal LM also takes the templates whose object is not last, each scored as the
    sentence from the object on (`Fact.causal_pairs`; `PreparedFact.targets` says which is which)."""
    masked, tok = bool(model.masked), model.tokenizer
    pairs = _slot_pairs(fact, language, masked, mask, sentence and not masked)
    if not pairs:
        return None
    tok_ids, full_ids, clean = [], [], True
    for _, left, answer in pairs:  # the object's tokens (a sentence target's tail aside), and the whole answer's
        obj_part = answer[: len(answer) - len(answer.tail)]
        ids, ok = continuation_ids(tok, left, obj_part)
        tok_ids.append(tuple(ids))
        full_ids.append(tuple(continuation_ids(tok, left, answer)[0]) if answer.tail else tuple(ids))
        clean &= ok
    answer_ids = tok_ids[0]
    if not answer_ids:
        raise ValueError(f"fact {fact.fact_id!r} ({language}): the answer {pairs[0][2]!r} has no tokens")
    dis = fact.distractors.get(language, ())
    unk = getattr(tok, "unk_token_id", None)  # once: an HF tokenizer's attribute lookup is slow
    sep = pairs[0][2][: len(pairs[0][2]) - len(pairs[0][2].lstrip())]
    dis_ids = tuple(tuple(continuation_ids(tok, pairs[0][1], sep + d)[0]) for d in dis)
    return PreparedFact(
        fact=fact, language=language, masked=masked,
        prompts=tuple(p for p, _, _ in pairs), answers=tuple(a for _, _, a in pairs),
        answer_ids=answer_ids, gold_token=decode_token(tok, answer_ids[0]),
        consistent=all(i == answer_ids for i in tok_ids), clean_split=clean,
        representable=not any(_unknown(unk, i) for i in tok_ids + full_ids),
        distractors=tuple(dis), distractor_ids=dis_ids,
    )


class _Texts:
    """A tokenizer stand-in that records the texts asked of it (ids: a zero per character and one more, so that
    a continuation always splits cleanly and is never empty); other attributes are the real one's."""

    def __init__(self, tokenizer: Any):
        self.tokenizer, self.texts = tokenizer, {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        self.texts[text] = None
        return {"input_ids": [0] * (len(text) + 1)}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


class _Encoded(_Texts):
    """A tokenizer stand-in that answers from `ids` {text: ids} and asks the real one for any other text."""

    def __init__(self, tokenizer: Any, ids: dict):
        super().__init__(tokenizer)
        self.ids = ids

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        ids = self.ids.get(text)
        return {"input_ids": ids if ids is not None else encode(self.tokenizer, text)}


@dataclass(frozen=True)
class _Asked:
    masked: bool
    tokenizer: Any


BATCH_TEXTS = 2048  # texts per batched tokenizer call (`prepare_facts`)


def prepare_facts(facts: Sequence[Fact], model: Any, language: str = "en", *,
                  sentence: bool = False) -> list[PreparedFact | None]:
    """`prepare_fact` of each fact, the same values, with the texts tokenized in a few batched calls when
    the tokenizer takes a list (HF's: one call per text costs it far more): a first pass with a stand-in
    collects the texts, one batch encodes them, and the real pass reads them (any text it did not ask
    for first, tokenized on its own)."""
    tok = model.tokenizer
    ids: dict = {}
    if callable(tok):
        asked = _Texts(tok)
        for f in facts:
            prepare_fact(f, _Asked(model.masked, asked), language, sentence=sentence)
        texts = list(asked.texts)
        try:
            for i in range(0, len(texts), BATCH_TEXTS):
                part = texts[i:i + BATCH_TEXTS]
                ids.update(zip(part, map(list, tok(part, add_special_tokens=False)["input_ids"])))
        except (TypeError, KeyError):  # not a batch tokenizer: one call per text
            ids = {}
    read = _Asked(model.masked, _Encoded(tok, ids)) if ids else model
    return [prepare_fact(f, read, language, sentence=sentence) for f in facts]


def usable(model: Any, fact: Fact, language: str = "en", *, sentence: bool = False) -> bool:
    """True if `model` can be asked `fact` in `language` (see `PreparedFact.usable`; `sentence` as
    `prepare_fact`'s)."""
    if not fact.has(language):
        return False
    p = prepare_fact(fact, model, language, sentence=sentence)
    return p is not None and p.usable


def prepare(facts: Iterable[Fact], model: Any, language: str | Iterable[str] = "en", *,
            mask: str = T.MASK, min_prompts: int = 1, max_answer_tokens: int | None = None,
            sentence: bool = False) -> Prepared:
    """Facts ready for `model` in `language`(s); facts with fewer than `min_prompts` usable prompts
    (causal LM: object-last templates; with `sentence`, the others too, scored as sentences) or longer
    answers than `max_answer_tokens` are dropped, with the reason in ``Prepared.dropped`` and the
    tallies in ``Prepared.counts``."""
    langs = [language] if isinstance(language, str) else list(language)
    items, dropped, totals = [], {}, Counter()
    for fact in facts:
        for lang in langs:
            if not fact.has(lang):
                continue
            totals[(fact.relation, lang)] += 1
            p = prepare_fact(fact, model, lang, mask=mask, sentence=sentence)
            if p is None or len(p.prompts) < min_prompts:
                n = 0 if p is None else len(p.prompts)
                dropped[(fact.fact_id, lang)] = f"{n} usable prompts (< {max(min_prompts, 1)})"
            elif max_answer_tokens is not None and p.n_answer_tokens > max_answer_tokens:
                dropped[(fact.fact_id, lang)] = f"answer has {p.n_answer_tokens} tokens (> {max_answer_tokens})"
            else:
                items.append(p)
    out = Prepared(items, dropped, totals)
    log.info("prepared %d facts (%d dropped)", len(items), len(dropped))
    return out


# -- known facts ------------------------------------------------------------------------------
def _norm(tok: Any) -> str | int:
    if isinstance(tok, int):
        return tok
    if hasattr(tok, "id") and not isinstance(tok, str):
        return int(tok.id)
    if isinstance(tok, tuple):
        tok = tok[0]
    return str(tok).replace("Ġ", " ").replace("▁", " ").strip()


def is_hit(top: Iterable[Any], p: PreparedFact) -> bool:
    """True if the gold token is among `top` (strings, ids, or objects with ``.id`` such as kn's Prediction)."""
    gold_s = _norm(p.gold_token)
    for t in top:
        n = _norm(t)
        if (isinstance(n, int) and n == p.gold_id) or (isinstance(n, str) and n == gold_s and n != ""):
            return True
    return False


@dataclass(frozen=True)
class Known:
    """Result of `filter_known`: the kept facts, per-fact hits and per-relation counts."""

    kept: Prepared
    hits: dict[tuple[str, str], tuple[int, int]]  # (fact_id, language) -> (prompts with gold in top-k, prompts)
    min_fraction: float
    probed: tuple[PreparedFact, ...] = field(default=(), repr=False)

    @property
    def counts(self):
        """pandas DataFrame per (relation, language): facts probed, known, share known."""
        import pandas as pd

        n = Counter((p.relation, p.language) for p in self.probed)
        k = Counter((p.relation, p.language) for p in self.kept)
        rows = [{"relation": r, "language": l, "facts": c, "known": k[(r, l)], "share": k[(r, l)] / c}
                for (r, l), c in n.items()]
        return pd.DataFrame(rows, columns=["relation", "language", "facts", "known", "share"])


def filter_known(prepared: Iterable[PreparedFact], probe: Callable[[str], Iterable[Any]], *,
                 min_fraction: float = 0.5,
                 score: Callable[[str, Sequence[str]], Sequence[float]] | None = None) -> Known:
    """Keep the facts whose gold token is in the probe's top-k on at least `min_fraction` of their
    prompts (Dai et al. keep facts the model gets right; "at least half the prompts" by default).

    probe(prompt) returns the model's top-k predictions at the answer position, as strings, ids or
    objects with ``.id`` (e.g. ``lambda p: kn.probe(lm, p, k=10)``).

    score(prompt, answers) -> log-probabilities, one per answer (e.g. ``lambda p, a: kn.answer_logprobs(lm, p,
    a)``): with it, a sentence-target prompt (its object not last) of a fact with
    distractors counts as a hit when its gold sentence outscores the sentence with each of the
    relation's other objects in the slot (the margin BMLAMA ranks candidates by); without it, or
    without distractors, the gold's first token in the probe's top-k.
    """
    items = list(prepared)
    kept, hits = [], {}
    for p in items:
        h = sum(_hit(p, q, a, probe, score) for q, a in zip(p.prompts, p.answers))
        hits[(p.fact_id, p.language)] = (h, len(p.prompts))
        if p.prompts and h >= min_fraction * len(p.prompts):
            kept.append(p)
    known = Known(Prepared(kept), hits, min_fraction, tuple(items))
    log.info("known facts: %d of %d", len(kept), len(items))
    return known


def _hit(p: PreparedFact, prompt: str, answer: str, probe, score) -> bool:
    if score is not None and getattr(answer, "tail", "") and p.distractors:
        return margin(prompt, answer, p.distractors, score) > 0
    return is_hit(probe(prompt), p)


def margin(prompt: str, answer: str, others: Sequence[str],
           score: Callable[[str, Sequence[str]], Sequence[float]]) -> float:
    """The gold answer's log-probability minus the best of `others` (objects put in its place with
    `templates.with_object`, separator and tail kept): > 0 when the gold ranks first."""
    cands = [answer] + [T.with_object(answer, o) for o in others]
    lp = list(score(prompt, cands))
    return lp[0] - max(lp[1:]) if len(lp) > 1 else float("inf")
