"""The sentence-level target of a causal LM (templates whose object is not last, as in verb-final
languages): the log-probability of the filled sentence from the object on, checked against a brute-force
computation on a tiny model, attributed and verified like a multi-token answer (`kn.tokens`)."""
import math
import pickle

import pytest
import torch

import kn
from kn.data import prepare as P, templates as T
from kn.data.schema import Fact
from kn.testing import tiny_lm

# "verb-final" templates in the tiny tokenizer's words: the object is followed by the relation
LAST = "the capital of [X] is [Y] ."
MIDDLE = ["[X] and [Y] is the capital city .", "in [X] , [Y] is the capital"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("GPT-2")


def fact(templates=(LAST, *MIDDLE)) -> Fact:
    return Fact("capital/France", "capital", {"en": "France"}, {"en": "Paris"}, {"en": list(templates)},
                distractors={"en": ["Berlin", "Rome", "Madrid"]})


def test_continuation_carries_its_tail():
    a = T.Continuation(" Paris is the capital", " is the capital")
    assert a.tail == " is the capital" and a.target == T.SENTENCE and a == " Paris is the capital"
    assert T.Continuation(" Paris").target == T.NEXT_TOKEN
    b = T.with_object(a, "Rome")
    assert b == " Rome is the capital" and b.tail == a.tail
    assert T.with_object(T.Continuation(" Paris"), "Rome") == " Rome"
    c = pickle.loads(pickle.dumps(a))  # Ray workers get their answers pickled
    assert c == a and c.tail == a.tail
    assert T.tail_of("[X] and [Y] is the capital city .") == " is the capital city ."
    assert T.tail_of(LAST) == "" and T.tail_of("カルロス2世は[Y]に生まれました。") == "に生まれました。"


def test_causal_pairs_take_mid_sentence_objects_only_when_asked():
    f = fact()
    assert f.causal_pairs("en") == [("the capital of France is", " Paris")]
    pairs = f.causal_pairs("en", sentence=True)
    assert pairs == [("the capital of France is", " Paris"), ("France and", " Paris is the capital city ."),
                     ("in France ,", " Paris is the capital")]
    assert [getattr(a, "tail", "") for _, a in pairs] == ["", " is the capital city .", " is the capital"]
    # an object that opens the sentence has no prefix to condition on: never a causal prompt
    assert fact(["[Y] is the capital of [X]"]).causal_pairs("en", sentence=True) == []


def test_prepare_records_each_prompts_target(lm):
    assert P.prepare_fact(fact(MIDDLE), lm, "en") is None  # today's rule: object-last only
    p = P.prepare_fact(fact(), lm, "en", sentence=True)
    assert p.targets == ("next_token", "sentence", "sentence") and p.usable
    assert p.answer_ids == (lm.tokenizer.convert_tokens_to_ids("Paris"),)  # the object's tokens, tail aside
    assert p.single_token and p.consistent
    assert P.prepare_fact(fact(), kn.testing.tiny_lm("BERT"), "en", sentence=True).targets == ("next_token",) * 3
    got = P.prepare([fact(MIDDLE)], lm, "en")
    assert len(got) == 0 and "0 usable prompts" in got.dropped[("capital/France", "en")]
    assert len(P.prepare([fact(MIDDLE)], lm, "en", sentence=True)) == 1


def brute_logprob(lm, prefix: str, sentence_rest: str) -> float:
    """log P(rest | prefix) by hand: the whole text tokenized once, one forward pass, the log-softmax
    at every position from the last prefix token on (no kn.tokens)."""
    tok = lm.tokenizer
    head = tok(prefix)["input_ids"]
    full = tok(prefix + sentence_rest)["input_ids"]
    assert full[: len(head)] == head
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([full])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[i - 1, full[i]] for i in range(len(head), len(full))))


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3"])
def test_sentence_logprob_matches_brute_force(family):
    lm = tiny_lm(family)
    for prefix, answer in fact().causal_pairs("en", sentence=True):
        want = brute_logprob(lm, prefix, answer)
        assert kn.answer_logprob(lm, prefix, answer) == pytest.approx(want, abs=1e-4)
        assert math.log(kn.answer_prob(lm, prefix, answer)) == pytest.approx(want, abs=1e-4)
        assert len(kn.tokens.targets(lm, prefix, answer)) == len(lm.tokenizer(answer)["input_ids"]) - 1  # <bos>


def test_sentence_target_is_attributed_and_verified_as_its_parts(lm):
    """The sentence target is the object's next-token target plus the tail's tokens teacher-forced after
    the gold object: attribution and suppression both decompose that way."""
    prefix, answer = fact().causal_pairs("en", sentence=True)[1]
    obj, tail = answer[: len(answer) - len(answer.tail)], answer.tail
    ig = kn.IG(steps=3)
    whole = kn.attribute(lm, prefix, answer, ig)
    parts = kn.attribute(lm, prefix, T.Continuation(obj), ig) + kn.attribute(lm, prefix + obj, T.Continuation(tail), ig)
    torch.testing.assert_close(whole, parts, atol=1e-5, rtol=1e-4)
    neurons = [(1, 3), (2, 7), (0, 11)]
    p0 = kn.answer_prob(lm, prefix, answer)
    with kn.suppress(lm, neurons):
        p = kn.answer_prob(lm, prefix, answer)
        q = kn.answer_prob(lm, prefix, T.Continuation(obj)) * kn.answer_prob(lm, prefix + obj, T.Continuation(tail))
    assert p == pytest.approx(q, rel=1e-6, abs=0) and p != pytest.approx(p0, rel=1e-4, abs=0)
    s = kn.verify(lm, [prefix], answer, neurons).summary()  # verify measures the same quantity
    assert s["suppression"] == pytest.approx(p / p0 - 1, rel=1e-4)


def test_known_by_the_gold_sentences_margin(lm):
    p = P.prepare_fact(fact(MIDDLE), lm, "en", sentence=True)
    logprob = {}

    def score(prompt, answers):
        out = [kn.answer_logprob(lm, prompt, a) for a in answers]
        logprob.update(zip(answers, out))
        return out

    never = lambda prompt: []  # noqa: E731  the probe is not asked for a sentence target with distractors
    known = P.filter_known([p], never, score=score, min_fraction=0.5)
    hits = known.hits[("capital/France", "en")][0]
    want = sum(P.margin(q, a, p.distractors, score) > 0 for q, a in zip(p.prompts, p.answers))
    assert hits == want and len(known.kept) == (hits >= 1)
    assert " Rome is the capital" in logprob  # distractors put in the slot, the tail kept
    assert P.margin("x", "a", ["b"], lambda q, a: [0.0, -1.0]) == 1.0


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "BERT"])
def test_candidates_in_one_batch_equal_one_at_a_time(family):
    lm = tiny_lm(family)
    if lm.masked:
        prompt, answer = "the capital of France is [MASK] .", T.Continuation(" Paris")
    else:
        prompt, answer = fact().causal_pairs("en", sentence=True)[1]
    cands = [answer, T.with_object(answer, "Tokyo city"), T.with_object(answer, "Rome")]  # rows of unequal length
    got = kn.answer_logprobs(lm, prompt, cands)
    for a, g in zip(cands, got):
        assert g == pytest.approx(math.log(kn.answer_prob(lm, prompt, a)), abs=1e-4)
        if not lm.masked:
            assert g == pytest.approx(brute_logprob(lm, prompt, a), abs=1e-4)


def test_coverage_gaps_against_english_in_points():
    import pandas as pd

    from kn.data.coverage import gaps

    t = pd.DataFrame({"language": ["en", "ja", "ko"], "facts": [100, 100, 50], "usable": [80, 75, 0],
                      "usable_share": [0.8, 0.75, 0.0], "known_share": [0.5, 0.2, float("nan")]})
    g = gaps(t).set_index("language")
    assert g.loc["ja", "usable_gap"] == pytest.approx(-5.0) and g.loc["ko", "usable_gap"] == pytest.approx(-80.0)
    assert g.loc["ja", "known_gap"] == pytest.approx(-30.0) and pd.isna(g.loc["ko", "known_gap"])
    assert g.loc["en", "usable_gap"] == 0
    old = t.drop(columns=["usable_share"])  # recordings made before the column existed
    assert gaps(old).set_index("language").loc["ja", "usable_gap"] == pytest.approx(-5.0)
    with pytest.raises(ValueError, match="'de'"):
        gaps(t, reference="de")
