"""One tokenization: the answer tokens the data layer prepares are the ones the kernels attribute.

Over the templates of PARAREL and BMLAMA-17 in ../shared/data (Chinese and Japanese slots glued to
the text, Russian, French, Spanish, Dutch), the built-in fact set, and hand-written French elisions
("l'[Y]", "d'[Y]"): what a run hands the kernels (`fact_queries`) is tokenized by `kn.tokens.targets`
into exactly the tokens that follow the prompt in the sentence up to the object. The oracle is the
definition, written here: tokenize the prompt, tokenize prompt + object as the template writes it,
take the tokens after the prompt's.
"""
from __future__ import annotations

import pytest

import kn
from kn.data import builtin, load
from kn.data import templates as T
from kn.data.prepare import prepare_fact, usable
from kn.data.schema import Fact
from kn.runs.phases.locate import fact_queries
from kn.tokens import targets

MODELS = ("gemma-3-270m", "smollm2-135m")
PER_LANGUAGE = 40  # BMLAMA facts per language, spread over its relations
PER_RELATION = 3  # PARAREL facts per relation

ELIDED = [
    Fact("elide/1", "capital", {"fr": "la France"}, {"fr": "Paris"},
         {"fr": ["La capitale de [X] porte le nom d'[Y]", "On appelle la capitale de [X] l'[Y]"]}),
    Fact("elide/2", "instrument", {"fr": "Miles Davis"}, {"fr": "trompette"},
         {"fr": ["Miles Davis joue de l'[Y]", "[X], joueur d'[Y]"]}),
]


def _enc(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _sentence_tokens(tok, template_prompt: str, obj: str) -> tuple[list[int], bool]:
    """The definition: tokens after the prompt's in the sentence the template writes up to the object;
    where the tokenizer merges across that boundary, the object as the template writes it, alone.
    Second: whether the split was clean."""
    head = template_prompt.split(T.OBJECT, 1)[0]
    left, written = head.rstrip(), head[len(head.rstrip()):] + obj
    ids, before = _enc(tok, left + written), _enc(tok, left)
    if ids[: len(before)] == before:
        return ids[len(before):], True
    return _enc(tok, written), False


def _spread(facts, n: int) -> list:
    by_rel: dict[str, list] = {}
    for f in facts:
        by_rel.setdefault(f.relation, []).append(f)
    out, i = [], 0
    while len(out) < n and any(i < len(v) for v in by_rel.values()):
        out += [v[i] for v in by_rel.values() if i < len(v)][: n - len(out)]
        i += 1
    return out


@pytest.fixture(scope="module")
def cases(shared_data):
    """(fact, language) pairs: BMLAMA-17 (every language), PARAREL, the built-in set, French elisions."""
    bm = load(f"bmlama:{shared_data / 'bmlama17'}")
    out = [(f, lang) for lang in bm.languages for f in _spread([f for f in bm if f.has(lang)], PER_LANGUAGE)]
    pararel = load(f"pararel:{shared_data / 'pararel'}")
    out += [(f, "en") for f in _spread(pararel, PER_RELATION * len(pararel.relations))]
    facts = builtin()
    out += [(f, lang) for lang in facts.languages for f in _spread([f for f in facts if f.has(lang)], 12)]
    out += [(f, "fr") for f in ELIDED]
    assert {"zh", "ja", "ru", "fr"} <= {lang for _, lang in out}
    return out


@pytest.mark.parametrize("name", MODELS)
def test_kernels_attribute_the_tokens_preparation_made(packaged_lm, cases, name):
    lm = packaged_lm(name)
    tok = lm.tokenizer
    checked = glued = merged = 0
    for fact, lang in cases:
        if not usable(lm, fact, lang):
            continue
        prepared = prepare_fact(fact, lm, lang)
        prompts, answers, _ = fact_queries(lm, fact, lang)
        causal_templates = [t for t, p in zip(fact.templates[lang], fact.prompts(lang)) if T.object_last(t)]
        rendered = [p for t, p in zip(fact.templates[lang], fact.prompts(lang)) if T.object_last(t)]
        assert len(rendered) == len(prompts) == len(causal_templates)
        for i, (prompt, answer, sentence) in enumerate(zip(prompts, answers, rendered)):
            gold = [t.gold for t in targets(lm, prompt, answer)]
            want, clean = _sentence_tokens(tok, sentence, fact.object[lang])
            merged += not clean
            assert gold == want, (fact.fact_id, lang, prompt, answer)
            if i == 0:
                assert tuple(gold) == prepared.answer_ids
            # a glued slot written with a space would be other tokens: the check above has teeth
            spaced = _enc(tok, prompt + " " + fact.object[lang])[len(_enc(tok, prompt)):]
            glued += not answer[:1].isspace() and spaced != want
            checked += 1
    assert checked > 300 and glued > 20 and merged < checked / 10, (checked, glued, merged)


def test_elided_slot_reaches_the_kernels_glued(packaged_lm):
    """The case the old code got wrong: "l'[Y]" prepared glued, attributed with a space."""
    lm = packaged_lm("smollm2-135m")
    prompts, answers, obj = fact_queries(lm, ELIDED[1], "fr")
    assert prompts == ["Miles Davis joue de l'", "Miles Davis, joueur d'"] and answers == ["trompette"] * 2
    glued, _ = _sentence_tokens(lm.tokenizer, "Miles Davis joue de l'[Y]", "trompette")
    spaced, _ = _sentence_tokens(lm.tokenizer, "Miles Davis joue de l' [Y]", "trompette")
    assert [t.gold for t in targets(lm, prompts[0], answers[0])] == glued != spaced
    # a person's plain answer gets the writer's separator (a space after a Latin letter or apostrophe)
    assert T.continuation("joue de l'", "trompette") == " trompette"
    assert T.continuation("首都是", "巴黎") == "巴黎" and T.continuation("", "Paris") == "Paris"
    assert kn.answer_prob(lm, prompts[0], answers[0]) != kn.answer_prob(lm, prompts[0], obj)


# scripts the shared BMLAMA copy does not have (and a few it has), hand-written: object-last templates
SCRIPTS = [
    Fact("script/ko", "capital", {"ko": "프랑스"}, {"ko": "파리"}, {"ko": ["[X]의 수도는 [Y]", "[X]의 수도: [Y]"]}),
    Fact("script/ar", "capital", {"ar": "فرنسا"}, {"ar": "باريس"}, {"ar": ["عاصمة [X] هي [Y].", "عاصمة [X]: [Y]"]}),
    Fact("script/he", "capital", {"he": "צרפת"}, {"he": "פריז"}, {"he": ["עיר הבירה של [X] היא [Y].", "בירת [X]: [Y]"]}),
    Fact("script/el", "capital", {"el": "Γαλλίας"}, {"el": "Παρίσι"},
         {"el": ["Η πρωτεύουσα της [X] είναι το [Y].", "Πρωτεύουσα της [X]: [Y]"]}),
    Fact("script/ja", "capital", {"ja": "フランス"}, {"ja": "パリ"}, {"ja": ["[X]の首都は[Y]。", "[X]の首都：[Y]"]}),
    Fact("script/ru", "capital", {"ru": "Франции"}, {"ru": "Париж"}, {"ru": ["Столица [X] — [Y]."]}),
    Fact("script/zh", "capital", {"zh": "法国"}, {"zh": "巴黎"}, {"zh": ["[X]的首都是[Y]。"]}),
]


@pytest.mark.parametrize("name", MODELS)
def test_every_script_tokenizes_and_attributes(packaged_lm, name):
    """Hangul, Arabic, Hebrew, Greek, kana, Cyrillic, CJK: the kernels' gold tokens are the
    definition's, none is unknown, and attribution gives finite, non-zero scores."""
    import torch

    lm = packaged_lm(name)
    for fact in SCRIPTS:
        (lang,) = fact.languages
        prompts, answers, _ = fact_queries(lm, fact, lang)
        assert len(prompts) == len(fact.templates[lang]), fact.fact_id
        for prompt, answer, sentence in zip(prompts, answers, fact.prompts(lang)):
            gold = [t.gold for t in targets(lm, prompt, answer)]
            assert gold == _sentence_tokens(lm.tokenizer, sentence, fact.object[lang])[0], (fact.fact_id, prompt)
            assert lm.tokenizer.unk_token_id not in gold
        s = kn.attribute(lm, prompts[0], answers[0], steps=2, layers=[lm.n_layers - 1])
        assert torch.isfinite(s).all() and s[-1].abs().max() > 0, fact.fact_id


@pytest.mark.parametrize("family", ["GPT-2", "BERT"])
@pytest.mark.parametrize("sentence", [False, True])
def test_prepare_facts_batched_equals_prepare_fact_one_by_one(family, sentence):
    """`prepare_facts` tokenizes in batched calls and returns what `prepare_fact` returns fact by fact: on the
    builtin facts (an answer the tiny tokenizer cannot write among them), for a masked and a causal LM, and
    with a tokenizer that takes no list (one call per text)."""
    from kn.data.prepare import prepare_facts
    from kn.testing import tiny_lm

    lm = tiny_lm(family)
    facts = [f for f in builtin() if f.has("en")]
    want = [prepare_fact(f, lm, "en", sentence=sentence) for f in facts]
    assert any(p is not None and not p.representable for p in want)  # the premise: an unwritable answer
    calls = []
    real = lm.tokenizer

    class Counted:  # the real tokenizer, its calls counted
        def __call__(self, text, **kw):
            calls.append(text)
            return real(text, **kw)

        def __getattr__(self, name):
            return getattr(real, name)

    class OneAtATime(Counted):  # takes no list
        def __call__(self, text, **kw):
            if not isinstance(text, str):
                raise TypeError("one text")
            return super().__call__(text, **kw)

    for tok, batched in ((Counted(), True), (OneAtATime(), False)):
        calls.clear()
        got = prepare_facts(facts, type("M", (), {"masked": lm.masked, "tokenizer": tok})(), "en", sentence=sentence)
        assert got == want
        lists = [c for c in calls if not isinstance(c, str)]
        assert (len(lists) >= 1 and len(calls) - len(lists) < len(facts)) if batched else not lists
