"""`kn.probing.batch_stats_under`: a causal LM runs the rows' prompts but their last token once and
the last tokens of every row-stackable condition in one pass over that key/value cache; the numbers
equal `answer_stats` per prompt inside each condition (prompts of different lengths, answers of 1-3
tokens, sliding windows, conditions that do not stack)."""
import contextlib

import numpy as np
import pytest
import torch

import kn
from kn import probing
from kn.ig import kvcache
from kn.interventions import scaled, stackable
from kn.probing import answer_stats, batch_stats_under
from kn.testing import TINY, tiny_lm
from kn.tokens import pad_id

from test_batch import CAUSAL, MASKED, NEURONS, OTHER


def pairs_of(lm):
    return MASKED if lm.masked else CAUSAL


def conditions(lm):
    return [contextlib.nullcontext, stackable(lambda: scaled(lm, NEURONS, 0.0)),
            stackable(lambda: scaled(lm, NEURONS, 3.0))]


def check_same(lm, conds=None, pairs=None, rtol=1e-5):
    """Each condition's result equals `answer_stats` per prompt inside it alone (a pass per answer token)."""
    pairs, conds = pairs or pairs_of(lm), conds or conditions(lm)
    got = batch_stats_under(lm, pairs, conds)
    assert len(got) == len(conds)
    for c, g in zip(conds, got):
        with c():
            want = [answer_stats(lm, p, a) for p, a in pairs]
        np.testing.assert_allclose([p for p, _ in g], [p for p, _ in want], rtol=rtol, atol=1e-12)
        assert [r for _, r in g] == [r for _, r in want]
    assert kn.hooks.count(lm.model) == 0
    return got


@contextlib.contextmanager
def batch_sizes(lm):
    """The batch size of every forward pass of the model inside the block, in order."""
    seen = []
    handle = lm.model.register_forward_pre_hook(lambda m, a, k: seen.append(len(k["input_ids"])), with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def n_rows(lm, pairs):
    return sum(len(kn.tokens.targets(lm, p, a)) for p, a in pairs)


@pytest.mark.parametrize("family", list(TINY))
def test_equals_answer_stats_per_prompt_under_each_condition(family):
    check_same(tiny_lm(family))


@pytest.mark.parametrize("family", ["Gemma-3", "Gemma-2", "Mistral"])
def test_prompts_longer_than_the_sliding_window(family):
    """A window of 4 tokens: the last token must see its own row's tokens at their own distances."""
    check_same(tiny_lm(family, sliding_window=4))


def left_aligned(stored, lengths):
    """The cache as the right-padded prefix pass leaves it (each row's tokens in the first slots)."""
    width = stored[0][0].shape[2]
    return stored, torch.arange(width)[None] < torch.as_tensor(lengths)[:, None]


@pytest.mark.parametrize("family, mutation", [
    ("Gemma-3", ("right_aligned", left_aligned)),  # window distances measured from the padded end
    ("GPT-2", ("positions", lambda model, at: {})),  # the last token placed after the padding
    ("Llama", ("positions", lambda model, at: {})),
])
def test_a_misplaced_last_token_is_caught(family, mutation, monkeypatch):
    lm = tiny_lm(family, sliding_window=4) if family == "Gemma-3" else tiny_lm(family)
    monkeypatch.setattr(kvcache, *mutation)
    with pytest.raises(AssertionError):
        check_same(lm)


@pytest.mark.parametrize("positions", ["answer", "all"])
@pytest.mark.parametrize("family", ["GPT-2", "Gemma-3", "BLOOM"])
def test_an_intervention_around_it_acts_where_it_says(family, positions):
    """`scaled` entered outside: positions="answer" acts in the last-token passes, not at the prefix
    pass's last position (`answer_rows` marks none there); "all" acts in both passes."""
    lm = tiny_lm(family)
    with scaled(lm, NEURONS, 3.0, positions=positions):
        got = batch_stats_under(lm, CAUSAL, [contextlib.nullcontext])[0]
        want = [answer_stats(lm, p, a) for p, a in CAUSAL]
    np.testing.assert_allclose([p for p, _ in got], [p for p, _ in want], rtol=1e-5)


@pytest.mark.parametrize("family", ["GPT-2", "BLOOM", "Llama"])
def test_one_token_rows(family):
    """Rows with nothing before their last token (a one-token prompt without BOS) beside longer ones."""
    lm = tiny_lm(family)
    rows = [([9], 0), ([9, 10, 11], 2), ([12], 0), ([5, 9, 10, 11, 12, 13], 5)]
    cond = [lambda: scaled(lm, NEURONS, 3.0), lambda: scaled(lm, OTHER, 0.0)]
    seen = []
    for chunk, probs in probing._batched_under(lm, rows, cond):
        for c, p in zip(cond, probs):
            with c():
                want = torch.cat([probing._rows_probs(lm, [rows[r]], pad_id(lm)) for r in chunk])
            np.testing.assert_allclose(p.numpy(), want.numpy(), rtol=1e-5, atol=1e-9)
        seen += chunk
    assert sorted(seen) == [0, 1, 2, 3]
    only_short = list(probing._batched_under(lm, [rows[0], rows[2]], cond))
    assert sum(len(c) for c, _ in only_short) == 2


@pytest.mark.parametrize("family", ["Llama", "BERT"])
def test_many_passes_equal_one(family, monkeypatch):
    lm = tiny_lm(family)
    one = batch_stats_under(lm, pairs_of(lm), conditions(lm))
    monkeypatch.setattr(probing, "ROW_TOKENS", 1)
    many = batch_stats_under(lm, pairs_of(lm), conditions(lm))
    for a, b in zip(one, many):
        np.testing.assert_allclose([p for p, _ in b], [p for p, _ in a], rtol=1e-5)


def test_bad_conditions_and_no_pairs():
    lm = tiny_lm("GPT-2")
    with pytest.raises(kn.checks.ArgumentError, match="factories"):
        batch_stats_under(lm, CAUSAL, [scaled(lm, NEURONS, 0.0)])
    assert batch_stats_under(lm, [], conditions(lm)) == [[], [], []]
    assert batch_stats_under(lm, CAUSAL, []) == []


@pytest.mark.parametrize("family", ["GPT-2", "Gemma-3"])
def test_sentence_targets(family):
    """Answers that go on after the object (`kn.data.templates.Continuation` with a tail), teacher-forced
    one row per token like any multi-token answer."""
    from kn.data.schema import Fact

    fact = Fact("capital/France", "capital", {"en": "France"}, {"en": "Paris"},
                {"en": ["the capital of [X] is [Y] .", "[X] and [Y] is the capital city .",
                        "in [X] , [Y] is the capital"]})
    lm = tiny_lm(family)
    pairs = fact.causal_pairs("en", sentence=True)
    assert sum(bool(getattr(a, "tail", "")) for _, a in pairs) == 2
    got = batch_stats_under(lm, pairs, conditions(lm))
    for c, g in zip(conditions(lm), got):
        with c():
            want = [kn.answer_prob(lm, p, a) for p, a in pairs]
        np.testing.assert_allclose([p for p, _ in g], want, rtol=1e-5)


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "BLOOM", "BERT"])
def test_stacked_conditions_share_one_last_token_pass(family):
    """A causal LM: one pass over the rows' prompts, one over [3 x rows] last tokens, not one per
    condition; a masked LM: `batch_stats` per condition (one pass each here)."""
    lm = tiny_lm(family)
    n = n_rows(lm, pairs_of(lm))
    with batch_sizes(lm) as seen:
        got = batch_stats_under(lm, pairs_of(lm), conditions(lm))
    assert seen == ([n] * 3 if lm.masked else [n, 3 * n])
    assert got == check_same(lm)


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3"])
def test_stacked_conditions_do_not_leak_into_each_others_rows(family):
    """Different neurons and factors in one pass: each block of rows sees its own condition only."""
    lm = tiny_lm(family)
    conds = [stackable(lambda: scaled(lm, NEURONS, 0.0)), stackable(lambda: scaled(lm, OTHER, 3.0)),
             contextlib.nullcontext, stackable(lambda: scaled(lm, NEURONS, 3.0))]
    got = [[p for p, _ in g] for g in check_same(lm, conds)]
    for i in range(len(got)):
        for j in range(i):
            assert max(abs(a - b) / b for a, b in zip(got[i], got[j])) > 1e-3  # 100x the comparisons' rtol


@pytest.mark.parametrize("family", ["GPT-2", "Gemma-3"])
def test_conditions_that_do_not_stack_run_passes_of_their_own(family):
    """positions="all" and a weight edit change the prompts' tokens too: each runs `batch_stats` inside
    it, beside the stacked conditions, and still equals the pass per prompt."""
    lm = tiny_lm(family)

    @contextlib.contextmanager
    def doubled_embeddings():
        w = lm.model.get_input_embeddings().weight
        with torch.no_grad():
            w.mul_(2.0)
        try:
            yield
        finally:
            with torch.no_grad():
                w.div_(2.0)

    conds = [stackable(lambda: scaled(lm, NEURONS, 0.0)), lambda: scaled(lm, NEURONS, 3.0, positions="all"),
             doubled_embeddings, contextlib.nullcontext]
    n = n_rows(lm, CAUSAL)
    with batch_sizes(lm) as seen:
        got = batch_stats_under(lm, CAUSAL, conds)
    assert seen == [n, 2 * n, n, n]
    check_same(lm, conds)
    assert got == batch_stats_under(lm, CAUSAL, conds)


@pytest.mark.parametrize("family", ["GPT-2", "Llama"])
def test_stacked_passes_respect_the_logit_budget(family, monkeypatch):
    """At most LOGIT_FLOATS logits a pass: 2 conditions' rows a last-token pass, then the third's."""
    lm = tiny_lm(family)
    one = batch_stats_under(lm, CAUSAL, conditions(lm))
    n = n_rows(lm, CAUSAL)
    monkeypatch.setattr(probing, "LOGIT_FLOATS", lm.head.weight.shape[0] * (2 * n + 1))
    with batch_sizes(lm) as seen:
        two = batch_stats_under(lm, CAUSAL, conditions(lm))
    assert seen == [n, 2 * n, n]
    for a, b in zip(one, two):
        np.testing.assert_allclose([p for p, _ in b], [p for p, _ in a], rtol=1e-5)


def test_one_token_prompts_stacked():
    """Prompts of one token (no prefix cache at all) beside longer ones, conditions stacked."""
    lm = tiny_lm("GPT-2")
    check_same(lm, pairs=[("Berlin", "Germany"), ("Paris", "France Italy"), ("Tokyo is a city in", "Japan")])

