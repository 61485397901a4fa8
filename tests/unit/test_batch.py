"""Batched probing (`kn.probing.batch_stats`) equals the pass per prompt (`answer_stats`), with and
without neurons scaled at the answer position, on prompts of different lengths and multi-token answers."""
import contextlib
import inspect

import numpy as np
import pytest
import torch

import kn
from kn import probing
from kn.interventions import answer_rows, scaled
from kn.probing import answer_prob, answer_stats, batch_probs, batch_stats
from kn.testing import TINY, tiny_lm
from kn.verification import effect

NEURONS = [(l, i) for l in range(3) for i in range(1, 48, 4)]  # a quarter of each tiny layer: large effects
OTHER = [(l, i) for l in range(3) for i in range(3, 48, 4)]  # as many neurons, none of NEURONS
# prompts of very different lengths and answers of 1-3 tokens (the tiny tokenizer is word-level)
CAUSAL = [("Paris is the capital of", "France"),
          ("Berlin", "Germany Italy Spain"),
          ("the official language of the country where Rome is located and which is in Europe is", "Italian"),
          ("Tokyo is a city in", "Japan Asia")]
MASKED = [("Paris is the capital of [MASK] .", "France"),
          ("[MASK] is a city", "Berlin Germany"),
          ("the official language of the country where Rome is located in Europe is [MASK] .", "Italian English French"),
          ("Tokyo is in [MASK]", "Japan")]
CONDITIONS = [None, 0.0, 3.0]


def pairs_of(lm):
    return MASKED if lm.masked else CAUSAL


def condition(lm, factor):
    return contextlib.nullcontext() if factor is None else scaled(lm, NEURONS, factor)


def check_same(lm, factor, rtol=1e-5):
    pairs = pairs_of(lm)
    with condition(lm, factor):
        got = batch_stats(lm, pairs)
        want = [answer_stats(lm, p, a) for p, a in pairs]
    np.testing.assert_allclose([p for p, _ in got], [p for p, _ in want], rtol=rtol, atol=1e-12)
    assert [r for _, r in got] == [r for _, r in want]
    return got, want


@pytest.mark.parametrize("family", list(TINY))
@pytest.mark.parametrize("factor", CONDITIONS)
def test_batched_equals_per_prompt(family, factor):
    check_same(tiny_lm(family), factor)


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "OPT", "BERT"])
def test_interventions_change_the_result(family):
    """The conditions differ, so equality under them is not equality of unscaled passes."""
    lm = tiny_lm(family)
    clean = [p for p, _ in batch_stats(lm, pairs_of(lm))]
    with scaled(lm, NEURONS, 3.0):
        amped = [p for p, _ in batch_stats(lm, pairs_of(lm))]
    assert max(abs(a - c) / c for a, c in zip(amped, clean)) > 1e-3  # 100x the comparisons' rtol


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "OPT", "BLOOM"])
def test_a_wrong_answer_position_is_caught(family, monkeypatch):
    """Scaling at the last (padded) position of every row, as a pass per prompt does, is wrong in a
    padded batch: the comparison must see it."""
    lm = tiny_lm(family)
    monkeypatch.setattr(probing, "answer_rows", lambda where: contextlib.nullcontext())
    with pytest.raises(AssertionError):
        check_same(lm, 3.0)


@pytest.mark.parametrize("family", ["GPT-2", "Gemma-3"])
def test_scaling_earlier_positions_too_is_caught(family, monkeypatch):
    """Token j's pass scales only its own position, not the positions before it (those that predict
    tokens < j, as one teacher-forced row per answer would): widening the rows' positions is seen."""
    lm = tiny_lm(family)
    real = probing.answer_rows

    @contextlib.contextmanager
    def widened(where):
        w = where.clone()
        for r in range(w.shape[0]):
            at = int(w[r].nonzero()[0])
            w[r, max(0, at - 2):at + 1] = True
        with real(w):
            yield

    monkeypatch.setattr(probing, "answer_rows", widened)
    with pytest.raises(AssertionError):
        check_same(lm, 3.0)


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma", "BERT"])
def test_many_passes_equal_one(family, monkeypatch):
    """Cut into passes by the token budget (one row a pass at the extreme): the same numbers."""
    lm = tiny_lm(family)
    with scaled(lm, NEURONS, 0.0):
        one = batch_stats(lm, pairs_of(lm))
        monkeypatch.setattr(probing, "ROW_TOKENS", 1)
        many = batch_stats(lm, pairs_of(lm))
    np.testing.assert_allclose([p for p, _ in many], [p for p, _ in one], rtol=1e-5)
    assert [r for _, r in many] == [r for _, r in one]


def count_passes(lm):
    n = {"passes": 0}

    def fn(module, args, kwargs):
        n["passes"] += 1
    return n, lm.model.register_forward_pre_hook(fn, with_kwargs=True)


def passes_of_effects(lm):
    """Forward passes of one `effects` call whose rows fit one pass: a masked LM one per condition
    (before, suppressed, amplified); a causal LM one over the rows' prompts but their last token,
    then one of the last tokens of all three conditions stacked (`kn.probing.batch_stats_under`)."""
    return 3 if lm.masked else 1 + 1


def loop(lm, prompts, answers, factor):
    """The per-prompt definition: `answer_prob` of each prompt inside the condition."""
    with condition(lm, factor):
        return [answer_prob(lm, p, a) for p, a in zip(prompts, answers)]


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "BLOOM", "BERT"])
def test_effect_equals_the_loop_in_one_pass_per_condition(family):
    lm = tiny_lm(family)
    prompts = [p for p, _ in pairs_of(lm)]
    answers = [a for _, a in pairs_of(lm)]
    n, handle = count_passes(lm)
    try:
        e = effect(lm, prompts, answers, NEURONS, 3.0, 0.0)
    finally:
        handle.remove()
    assert n["passes"] == passes_of_effects(lm)
    np.testing.assert_allclose(e.before, loop(lm, prompts, answers, None), rtol=1e-5)
    np.testing.assert_allclose(e.suppressed, loop(lm, prompts, answers, 0.0), rtol=1e-5)
    np.testing.assert_allclose(e.amplified, loop(lm, prompts, answers, 3.0), rtol=1e-5)
    assert kn.hooks.count(lm.model) == 0


def test_one_answer_for_all_prompts_and_bad_lengths():
    lm = tiny_lm("GPT-2")
    prompts = ["Paris is the capital of", "Berlin is the capital of"]
    assert batch_probs(lm, prompts, "France") == pytest.approx([answer_prob(lm, p, "France") for p in prompts], rel=1e-5)
    with pytest.raises(kn.checks.ArgumentError):
        batch_probs(lm, prompts, ["France"])
    assert batch_stats(lm, []) == []


def test_answer_rows_of_another_shape_are_refused():
    lm = tiny_lm("Llama")
    ids = torch.tensor([[5, 10, 11, 12]])
    with scaled(lm, NEURONS, 2.0), answer_rows(torch.ones(2, 4, dtype=torch.bool)), \
            pytest.raises(RuntimeError, match="answer_rows"), torch.no_grad():
        lm.model(input_ids=ids)


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "BLOOM", "BERT", "RoBERTa"])
def test_batch_probe_equals_probe(family):
    lm = tiny_lm(family)
    prompts = [p for p, _ in pairs_of(lm)]
    got = kn.probing.batch_probe(lm, prompts, k=5)
    for prompt, g in zip(prompts, got):
        want = kn.probe(lm, prompt, k=5)
        assert [x.id for x in g] == [x.id for x in want]
        assert [x.token for x in g] == [x.token for x in want]
        np.testing.assert_allclose([x.prob for x in g], [x.prob for x in want], rtol=1e-5)


def test_known_selection_is_unchanged():
    """select_facts(known=True) batches each fact's prompts: the same facts as probing one by one."""
    from kn.data import builtin, select_facts
    from kn.data.prepare import filter_known, prepare_fact

    lm = tiny_lm("GPT-2")
    facts = builtin()
    got = [f.fact_id for f in select_facts(facts, lm=lm, known=True, k=10)]
    usable = [p for f in facts if f.has("en") and (p := prepare_fact(f, lm, "en")) is not None and p.usable]
    want = [p.fact_id for p in usable if filter_known([p], lambda q: kn.probe(lm, q, k=10)).kept]
    assert 0 < len(want) < len(usable)  # some known, some not
    assert got == want


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "BLOOM", "BERT"])
def test_effects_of_a_fact_and_its_controls_share_the_passes(family):
    """verify's fact and two controls (prompts of different lengths, answers of 1-3 tokens): the passes
    of one measurement (`passes_of_effects`: 4 for a causal LM, 3 for a masked one), each group's
    numbers those of `answer_prob` per prompt under each condition."""
    from kn.verification import effects

    lm = tiny_lm(family)
    pairs = pairs_of(lm)
    groups = [([p for p, _ in pairs[:2]], [a for _, a in pairs[:2]]), ([pairs[2][0]], pairs[2][1]),
              ([p for p, _ in pairs[1:]], [a for _, a in pairs[1:]])]
    n, handle = count_passes(lm)
    try:
        got = effects(lm, groups, NEURONS, 3.0, 0.0)
    finally:
        handle.remove()
    assert n["passes"] == passes_of_effects(lm) and len(got) == 3
    for (ps, a), g in zip(groups, got):
        answers = [a] * len(ps) if isinstance(a, str) else a
        assert len(g.before) == len(ps)
        for name, f in (("before", None), ("suppressed", 0.0), ("amplified", 3.0)):
            np.testing.assert_allclose(getattr(g, name), loop(lm, ps, answers, f), rtol=1e-5)
    with pytest.raises(kn.checks.ArgumentError):
        effects(lm, [(["a", "b"], ["x"])], NEURONS)
    assert kn.hooks.count(lm.model) == 0


@pytest.mark.parametrize("per_relation", [None, 1, 3])
def test_known_selection_probes_facts_together(monkeypatch, per_relation):
    """select_facts(known=True) probes several facts' prompts in one batch: the same facts and the same
    probed / known counts as probing one fact at a time, in fewer probes."""
    from kn.data import builtin, select, select_facts

    lm = tiny_lm("GPT-2")
    facts = builtin()
    calls = {"n": 0}
    real = kn.probing.batch_probe

    def counted(*a, **kw):
        calls["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(kn.probing, "batch_probe", counted)
    runs = {}
    for ahead in (1, select.PROBE_FACTS):
        monkeypatch.setattr(select, "PROBE_FACTS", ahead)
        calls["n"] = 0
        chosen = select_facts(facts, lm=lm, known=True, k=10, per_relation=per_relation)
        runs[ahead] = ([f.fact_id for f in chosen], chosen.info["selection"]["counts"], calls["n"])
    (one_ids, one_counts, one_calls), (ids, counts, n_calls) = runs[1], runs[select.PROBE_FACTS]
    assert ids == one_ids and counts == one_counts
    assert counts["en"]["probed"] > counts["en"]["known"] > 0
    assert n_calls < one_calls


def test_known_selection_shows_its_progress_only_when_asked(capsys):
    """select_facts(known=True, progress=True) draws a bar over the relations on stderr, ending at
    every relation; without progress (or without known) it prints nothing, and the choice is the same."""
    from kn.data import builtin, select_facts

    lm = tiny_lm("GPT-2")
    facts = builtin()
    quiet = [f.fact_id for f in select_facts(facts, lm=lm, known=True, k=10, per_relation=1)]
    assert capsys.readouterr().err == ""
    shown = [f.fact_id for f in select_facts(facts, lm=lm, known=True, k=10, per_relation=1, progress=True)]
    err = capsys.readouterr().err
    n = len(facts.relations)
    assert shown == quiet and "known facts" in err and f"{n}/{n}" in err and "selected" in err
    select_facts(facts, lm=lm, per_relation=1, progress=True)
    assert capsys.readouterr().err == ""


def readings_loop(lm, pairs):
    """The edit metrics' readings by their definition: one unbatched pass per answer token (its
    teacher-forced context), the argmax at the position that predicts it and, for the first token, the
    log-probabilities there."""
    out = []
    with torch.no_grad():
        for p, a in pairs:
            ts = kn.tokens.targets(lm, p, a)
            logits = [lm.model(input_ids=t.ids).logits[0, t.pos].float() for t in ts]
            out.append(([int(x.argmax()) for x in logits], torch.log_softmax(logits[0], -1),
                        sum(int(x.argmax()) == t.gold for x, t in zip(logits, ts)) / len(ts)))
    return out


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "BLOOM", "OPT", "BERT"])
@pytest.mark.parametrize("factor", CONDITIONS)
def test_edit_readings_batched_equal_the_pass_per_token(family, factor):
    """`kn.edits.metrics.readings_of` and `token_accuracies` (batched, rows of different lengths, answers
    of 1-3 tokens) equal one unbatched pass per answer token, with and without neurons scaled at the
    answer (the `scale` edit), and `readings` of one pair the same; one pass each."""
    from kn.edits.metrics import readings, readings_of, token_accuracies

    lm = tiny_lm(family)
    pairs = pairs_of(lm)
    with condition(lm, factor):
        want = readings_loop(lm, pairs)
        n, handle = count_passes(lm)
        try:
            got = readings_of(lm, pairs)
            acc = token_accuracies(lm, pairs)
        finally:
            handle.remove()
        one = readings(lm, *pairs[1])
    assert n["passes"] == 2 < sum(len(w[0]) for w in want)  # one pass each, where one per token was
    assert [g[0] for g in got] == [w[0] for w in want] and one[0] == want[1][0]
    for (_, g), (_, w, _) in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(one[1], want[1][1], rtol=1e-4, atol=1e-4)
    assert acc == [w[2] for w in want]


def sample_loop(lm, prompt, max_length, top_k, seed):
    """ROME's sampled continuation by its definition, one row: the whole prompt, then one token at a
    time over the key/value cache, each drawn from the top-k's softmax with a seeded generator."""
    from transformers import DynamicCache

    ids = lm.tokenizer(prompt, return_tensors="pt").input_ids
    gen = torch.Generator().manual_seed(seed)
    cache, step, out = DynamicCache(), ids, ids[0].tolist()
    # the cache's keyword: `cache` where transformers has it (`past_key_values` is then deprecated)
    name = "cache" if "cache" in inspect.signature(lm.model.forward).parameters else "past_key_values"
    with torch.no_grad():
        while len(out) < max_length:
            logits = lm.model(input_ids=step, use_cache=True, **{name: cache}).logits[0, -1]
            top = logits.float().topk(top_k)
            out.append(int(top.indices[torch.multinomial(torch.softmax(top.values, -1), 1, generator=gen)]))
            if out[-1] == lm.tokenizer.eos_token_id:
                break
            step = torch.tensor([[out[-1]]])
    return lm.tokenizer.decode(out, skip_special_tokens=True)


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "BLOOM", "OPT"])
@pytest.mark.parametrize("factor", [None, 0.0])
def test_samples_decoded_together_equal_one_row_at_a_time(family, factor):
    """`kn.edits.metrics.samples` (prompts of 2 to 17 tokens, each its own seed, decoded in one batch;
    one prompt already at the length limit) gives each prompt the text of the one-row loop, with and
    without neurons scaled at the answer (the `scale` edit); masked LMs and a seed count that does not
    match are refused."""
    from kn.edits.metrics import sample, samples

    lm = tiny_lm(family)
    prompts = [p for p, _ in CAUSAL] + ["Paris"]
    seeds = [11, 0, 5, 7, 3]
    with condition(lm, factor):
        want = [sample_loop(lm, p, 24, 3, s) for p, s in zip(prompts, seeds)]
        got = samples(lm, prompts, 24, top_k=3, seeds=seeds)
        assert sample(lm, prompts[0], 24, top_k=3, seed=11) == want[0]
        assert samples(lm, [prompts[2]], 10, top_k=3, seeds=[1]) == [sample_loop(lm, prompts[2], 10, 3, 1)]
    assert got == want and len(set(got)) == len(got)
    assert all(len(lm.tokenizer(w).input_ids) <= 24 for w in want)
    with pytest.raises(kn.checks.ArgumentError, match="seeds"):
        samples(lm, prompts, 24, seeds=[1])
    with pytest.raises(kn.checks.ArgumentError, match="masked"):
        samples(tiny_lm("BERT"), ["Paris is [MASK] ."], 10, seeds=[0])


@pytest.mark.parametrize("min_fraction", [0.3, 0.5, 1.0])
def test_known_selection_stops_probing_a_decided_fact(monkeypatch, min_fraction):
    """select_facts(known=True) probes only the prompts that can still change a fact's verdict: the same
    facts and known count as `filter_known` over every prompt (counted here from the definition), in
    fewer probed prompts than the facts have (all of them at min_fraction 1: one round, each must hit)."""
    k = 10
    from kn.data import builtin, select_facts
    from kn.data.prepare import filter_known, prepare_fact

    lm = tiny_lm("GPT-2")
    facts = builtin()
    seen = []
    real = kn.probing.batch_probe

    def counted(lm_, prompts, k):
        seen.extend(prompts)
        return real(lm_, prompts, k=k)

    monkeypatch.setattr(kn.probing, "batch_probe", counted)
    relations = ["capital", "currency", "sport", "birthplace"]
    chosen = select_facts(facts, relations=relations, lm=lm, known=True, k=k, min_fraction=min_fraction)
    monkeypatch.setattr(kn.probing, "batch_probe", real)
    usable = [p for f in facts if f.relation in relations and f.has("en")
              and (p := prepare_fact(f, lm, "en")) is not None and p.usable]
    want = {p.fact_id for p in usable
            if filter_known([p], lambda q: kn.probe(lm, q, k=k), min_fraction=min_fraction).kept}
    assert 0 < len(want) < len(usable) and {f.fact_id for f in chosen} == want
    assert chosen.info["selection"]["counts"]["en"]["known"] == len(want)
    total = sum(len(p.prompts) for p in usable)
    assert len(seen) == len(set(seen)) <= total and (len(seen) < total) == (min_fraction < 1)


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "BLOOM", "OPT"])
def test_edits_read_side_by_side_equal_each_edited_model(family):
    """`kn.edits.rows`: value-slot changes of three edits (different layers and neurons, one edit none),
    taken by `slot_deltas` inside each edit and read side by side (`per_row`), give row r the logits
    and the sampled text of the model with edit r written into its weights."""
    from kn.edits.metrics import sample, samples
    from kn.edits.base import restored
    from kn.edits.rows import per_row, slot_deltas, slots_of

    lm = tiny_lm(family)
    gen = torch.Generator().manual_seed(0)
    changes = [{0: [1, 5]}, {}, {1: [2], 2: list(range(0, 40, 3))}]  # layer -> neurons whose slots change
    prompt = CAUSAL[0][0]
    ids = lm.tokenizer(prompt, return_tensors="pt").input_ids
    unedited, deltas, want_logits, want_text = slots_of(lm), [], [], []
    for change in changes:
        with restored([lm.value_slots(l) for l in change]), torch.no_grad():
            for l, neurons in change.items():
                s = lm.value_slots(l)
                s[neurons] += torch.randn(len(neurons), s.shape[1], generator=gen) * 5
            d = slot_deltas(lm, unedited)
            assert {l: sorted(i.tolist()) for l, (i, _) in d.items()} == {l: sorted(n) for l, n in change.items()}
            deltas.append(d)
            want_logits.append(lm.model(input_ids=ids).logits[0])
            want_text.append(sample(lm, prompt, 20, top_k=3, seed=4))
    with per_row(lm, deltas), torch.no_grad():
        got = lm.model(input_ids=ids.expand(len(changes), -1)).logits
        texts = samples(lm, [prompt] * len(changes), 20, top_k=3, seeds=[4] * len(changes))
        with pytest.raises(RuntimeError, match="per_row holds 3 edits"):
            lm.model(input_ids=ids)
    for r, w in enumerate(want_logits):
        torch.testing.assert_close(got[r], w, rtol=1e-4, atol=1e-4)
    assert texts == want_text and len(set(want_text)) > 1
    assert kn.hooks.count(lm.model) == 0 and all(torch.equal(lm.value_slots(l), s) for l, s in unedited.items())


@pytest.mark.parametrize("family", ["GPT-2", "Gemma-3", "OPT"])
@pytest.mark.parametrize("positions", ["answer", "all"])
def test_scale_read_side_by_side_equals_its_hooks(family, positions):
    """`Scale.as_row` (the neurons' slots changed by (factor - 1) x v, at the positions it scales) read in
    `per_row` beside the unedited model and another factor: each row's sampled text is the text sampled
    one row at a time with the scale edit's own hooks in force (none for the unedited row)."""
    from contextlib import nullcontext

    from kn import edits
    from kn.edits.metrics import sample, samples
    from kn.edits.rows import per_row

    lm = tiny_lm(family)
    prompt = CAUSAL[0][0]
    neurons = ((0, 3), (1, 7), (1, 11), (2, 5))
    req = edits.Request((prompt,), " Paris", " Rome", neurons=neurons)
    made = [None, 0.0, 2.0, 6.0]
    want, rows = [], []
    for factor in made:
        ctx = nullcontext() if factor is None else edits.edit(lm, "scale", [req], factor=factor, positions=positions)
        with ctx:
            want.append(sample(lm, prompt, 24, top_k=3, seed=9))
        rows.append({} if factor is None else
                    edits.method("scale", factor=factor, positions=positions).as_row(lm, [req]))
    assert [r.answer_only for r in rows[1:]] == [positions == "answer"] * 3
    with per_row(lm, rows):
        got = samples(lm, [prompt] * len(rows), 24, top_k=3, seeds=[9] * len(rows))
    assert got == want and len(set(want)) > 1
    assert edits.method("scale").as_row(tiny_lm("BERT"), [req]) is None  # its answer positions are [MASK]s
    assert kn.hooks.count(lm.model) == 0


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "OPT", "BERT"])
def test_edit_losses_read_only_the_answer_positions(family):
    """`kn.edits.base.nll` (a causal LM: one pass for every answer token) and `log_probs` equal the loss
    by its definition, a full-vocabulary pass per answer token, in value and in the gradient they send
    to a layer's value slots (its FFN output weight)."""
    from kn.edits.base import log_probs, nll

    lm = tiny_lm(family)
    slots = lm.down_proj(1).weight  # the value slots' parameter
    for prompt, answer in pairs_of(lm):
        ts = kn.tokens.targets(lm, prompt, answer)
        for first_only in (False, True):
            grads = []
            for use_kn in (True, False):
                slots.grad = None
                with torch.enable_grad():
                    slots.requires_grad_(True)
                    if use_kn:
                        loss = nll(lm, prompt, answer, first_only=first_only)
                    else:
                        loss = -sum(torch.log_softmax(lm.model(input_ids=t.ids).logits[0, t.pos].float(), -1)[t.gold]
                                    for t in ts[: 1 if first_only else None])
                    loss.backward()
                grads.append((loss.detach(), slots.grad.clone()))
            slots.grad = None
            torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)
        ids, pos = kn.tokens.query(lm, prompt)
        with torch.no_grad():
            want = torch.log_softmax(lm.model(input_ids=ids).logits[0, pos].float(), -1)
            torch.testing.assert_close(log_probs(lm, prompt), want, rtol=1e-5, atol=1e-5)
    assert kn.hooks.count(lm.model) == 0


@pytest.mark.parametrize("family", ["GPT-2", "Llama", "Gemma-3", "OPT", "BERT"])
def test_batch_losses_equal_each_loss_by_its_definition(family):
    """`kn.edits.base.batch_losses` (a causal LM: the pairs and the keep prompts in one right-padded pass)
    gives each pair's nll and first-token nll and each keep prompt's log-probabilities of a full-vocabulary
    pass per answer token on the prompt alone, in value and in the gradient sent to a layer's value slots."""
    from kn.edits.base import batch_losses

    lm = tiny_lm(family)
    pairs = pairs_of(lm)
    keep = [p for p, _ in pairs][::-1]
    slots = lm.down_proj(1).weight
    got = []
    for use_kn in (True, False):
        slots.grad = None
        with torch.enable_grad():
            slots.requires_grad_(True)
            if use_kn:
                sums, firsts, qs = batch_losses(lm, pairs, keep)
            else:
                per = [[-torch.log_softmax(lm.model(input_ids=t.ids).logits[0, t.pos].float(), -1)[t.gold]
                        for t in kn.tokens.targets(lm, p, a)] for p, a in pairs]
                sums, firsts = torch.stack([sum(x) for x in per]), torch.stack([x[0] for x in per])
                qs = [torch.log_softmax(lm.model(input_ids=ids).logits[0, pos].float(), -1)
                      for ids, pos in (kn.tokens.query(lm, p) for p in keep)]
            (sums.sum() + 2 * firsts.sum() + sum(q[:50].exp().sum() for q in qs)).backward()
        got.append((sums.detach(), firsts.detach(), torch.stack(qs).detach(), slots.grad.clone()))
    slots.grad = None
    assert len(pairs) > 1 and got[0][0].shape == (len(pairs),)
    for a, b in zip(*got):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert kn.hooks.count(lm.model) == 0
