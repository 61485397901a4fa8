"""Bad inputs at every public boundary, by public function: kn raises the error (type checked) and the
message names the offending argument; nothing comes from deep inside torch or transformers, and no
result is silently empty. Also the issue-12 findings that were silent: verify's string control
prompts and generator neurons, duplicated neurons in an edit, the CLI's one-line errors and SIGINT."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import kn
from kn import editing, hooks
from kn.checks import ArgumentError
from kn.testing import tiny_lm

CAUSAL = "Paris is the capital of"
MASKED = "Paris is the capital of [MASK] ."


@pytest.fixture(scope="module")
def gpt2(one_thread):
    return tiny_lm("GPT-2")


@pytest.fixture(scope="module")
def bert(one_thread):
    return tiny_lm("BERT")


def raises(exc, names: str):
    """pytest.raises for `exc` whose message mentions `names` (a regex)."""
    return pytest.raises(exc, match=names)


# -- kn.attribute / kn.activations / kn.scores -----------------------------------------------------
@pytest.mark.parametrize("prompt, answer, name", [
    (None, "France", "prompt"), ("", "France", "prompt"), (CAUSAL, None, "answer"), (CAUSAL, " ", "answer"),
    (CAUSAL, 3, "answer"), (["a", "b"], "France", "prompt"),
])
def test_attribute_text(gpt2, prompt, answer, name):
    for fn in (kn.attribute, kn.activations, kn.scores):
        with raises(ArgumentError, name):
            fn(gpt2, prompt, answer)


@pytest.mark.parametrize("kw, name", [
    ({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"rule": "simpson"}, "rule"),
    ({"batch_size": 0}, "batch_size"), ({"freeze_norm": "yes"}, "freeze_norm"), ({"baseline": "mean"}, "baseline"),
    ({"layers": [7]}, "layer"), ({"layers": ["0"]}, "layer"), ({"layers": []}, "layers is empty"),
])
def test_attribute_settings(gpt2, kw, name):
    with raises((ValueError, TypeError), name):
        kn.attribute(gpt2, CAUSAL, "France", **kw)


def test_attribute_masked_prompt_shape(bert, gpt2):
    with raises(ValueError, r"\[MASK\]"):
        kn.attribute(bert, "no mask here", "France")
    with raises(ValueError, "causal"):
        kn.attribute(gpt2, MASKED, "France")


# -- kn.probe / kn.answer_prob / kn.answer_rank ------------------------------------------------------
@pytest.mark.parametrize("k", [0, -1, 2.0, True, "3"])
def test_probe_k(gpt2, k):
    with raises(ArgumentError, r"\bk\b"):
        kn.probe(gpt2, CAUSAL, k=k)


def test_probe_prompt_and_answers(gpt2):
    with raises(ArgumentError, "prompt"):
        kn.probe(gpt2, 42)
    with raises(ArgumentError, "answer"):
        kn.answer_prob(gpt2, CAUSAL, "")
    with raises(ArgumentError, "prompt"):
        kn.answer_rank(gpt2, "   ", "France")


# -- kn.suppress / kn.amplify / kn.scaled -------------------------------------------------------------
@pytest.mark.parametrize("neurons, name", [
    ([(9, 0)], "layer"), ([(0, 10_000)], "FFN width"), ([7], "pair"), ("0,1", "pairs"), ([(0, 1, 2)], "pair"),
    ([(0.5, 1)], "layer"), ([(0, True)], "index"), (5, "pairs"),
])
def test_interventions_neurons(gpt2, neurons, name):
    for ctx in (lambda: kn.suppress(gpt2, neurons), lambda: kn.amplify(gpt2, neurons)):
        with raises(ArgumentError, name):
            with ctx():
                pass
    assert hooks.count(gpt2.model) == 0


@pytest.mark.parametrize("factor", [math.nan, math.inf, "2", None])
def test_interventions_factor(gpt2, factor):
    with raises(ArgumentError, "factor"):
        with kn.amplify(gpt2, [(0, 1)], factor):
            pass
    with raises(ArgumentError, "positions"):
        with kn.suppress(gpt2, [(0, 1)], positions="last"):
            pass


def test_neurons_accept_tensors_and_numpy(gpt2):
    import numpy as np

    with kn.suppress(gpt2, torch.tensor([[0, 1], [1, 2]])):
        a = kn.answer_prob(gpt2, CAUSAL, "France")
    with kn.suppress(gpt2, np.array([[0, 1], [1, 2]])):
        b = kn.answer_prob(gpt2, CAUSAL, "France")
    assert a == b


# -- kn.locate / kn.coarse / kn.refine ---------------------------------------------------------------------
@pytest.mark.parametrize("kw, name", [
    ({"threshold": 1.5}, "threshold"), ({"threshold": math.nan}, "threshold"), ({"share": -0.1}, "share"),
    ({"min_prompts": 0}, "min_prompts"), ({"method": "gradient"}, "method"),
])
def test_locate_arguments(gpt2, kw, name):
    with raises((ValueError, TypeError), name):
        kn.locate(gpt2, [CAUSAL] * 3, "France", steps=2, **kw)


def test_locate_prompts_and_answers(gpt2):
    with raises(ArgumentError, r"prompts\[1\]"):
        kn.locate(gpt2, [CAUSAL, "", CAUSAL], "France", steps=2)
    with raises(ArgumentError, "prompts"):
        kn.locate(gpt2, 7, "France", steps=2)
    with raises(ArgumentError, "2 answers for 3 prompts"):
        kn.locate(gpt2, [CAUSAL] * 3, ["France", "Italy"], steps=2)
    with raises(ValueError, "min_prompts"):
        kn.locate(gpt2, CAUSAL, "France", steps=2)  # one prompt, three needed


def test_coarse_and_refine():
    with raises(ArgumentError, "NaN"):
        kn.coarse(torch.tensor([[0.1, math.nan]]))
    with raises(ArgumentError, "threshold"):
        kn.coarse(torch.ones(2, 2), threshold=-1)
    with raises(ArgumentError, "share"):
        kn.refine([{(0, 1)}], share=2)


# -- kn.verify: finding 3 --------------------------------------------------------------------------------
def test_verify_takes_one_control_prompt_as_one_prompt(gpt2):
    v = kn.verify(gpt2, [CAUSAL], "France", [(0, 1)], control_prompts="Rome is the capital of",
                  control_answer="Italy")
    assert len(v.control.before) == 1  # not one per character
    w = kn.verify(gpt2, [CAUSAL], "France", [(0, 1)], control_prompts=["Rome is the capital of"],
                  control_answer="Italy")
    assert v.control.before.tolist() == w.control.before.tolist()


def test_verify_reads_generator_neurons_once(gpt2):
    listed = kn.verify(gpt2, CAUSAL, "France", [(0, 1), (1, 5), (2, 9)])
    generated = kn.verify(gpt2, CAUSAL, "France", ((l, i) for l, i in [(0, 1), (1, 5), (2, 9)]))
    assert generated.fact.amplified.tolist() == listed.fact.amplified.tolist()
    assert generated.neurons == listed.neurons == [(0, 1), (1, 5), (2, 9)]
    assert generated.fact.amplified.tolist() != generated.fact.before.tolist()


def test_verify_arguments(gpt2):
    with raises(ArgumentError, "control_answer"):
        kn.verify(gpt2, CAUSAL, "France", [(0, 1)], control_prompts="Rome is the capital of")
    with raises(ArgumentError, "control_prompts"):
        kn.verify(gpt2, CAUSAL, "France", [(0, 1)], control_answer="Italy")
    with raises(ArgumentError, "factor"):
        kn.verify(gpt2, CAUSAL, "France", [(0, 1)], factor=math.inf)


# -- kn.editing: finding 5 ------------------------------------------------------------------------------
def test_update_fact_edits_a_listed_twice_neuron_once(gpt2):
    with editing.update_fact(gpt2, [(1, 3)], CAUSAL, "France", "Italy"):
        once = gpt2.value_slots(1)[3].clone()
    with editing.update_fact(gpt2, [(1, 3), (1, 3), [1, 3]], CAUSAL, "France", "Italy"):
        twice = gpt2.value_slots(1)[3].clone()
    assert torch.equal(once, twice)


@pytest.mark.parametrize("kw, name", [({"lambda1": -1.0}, "lambda1"), ({"lambda2": math.nan}, "lambda2")])
def test_update_fact_arguments(gpt2, kw, name):
    before = gpt2.value_slots(1).clone()
    with raises(ArgumentError, name):
        with editing.update_fact(gpt2, [(1, 3)], CAUSAL, "France", "Italy", **kw):
            pass
    with raises(ArgumentError, "new"):
        with editing.update_fact(gpt2, [(1, 3)], CAUSAL, "France", ""):
            pass
    assert torch.equal(gpt2.value_slots(1), before)


def test_erase_arguments(gpt2):
    with raises(ArgumentError, "pair"):
        with editing.erase(gpt2, [3]):
            pass


# -- kn.load -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, name", [
    ({"device": "gpu"}, "device"), ({"device": "cuda"}, "device"), ({"device": "tpu"}, "device"),
    ({"dtype": "float32"}, "dtype"), ({"dtype": torch.int64}, "dtype"),
])
def test_load_arguments(kw, name):
    if kw.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with raises(ArgumentError, name):
        kn.load("gemma-3-270m", **kw)


def test_load_name():
    with raises(ArgumentError, "name_or_path"):
        kn.load(None)
    with raises(kn.ModelNotFoundError, "packaged"):
        kn.load("/nowhere/a-model")


def test_load_refuses_a_checkpoint_without_its_lm_head(tmp_path, bert):
    bert.model.bert.save_pretrained(tmp_path)  # the bare encoder: the MLM head would be random
    bert.tokenizer.save_pretrained(tmp_path)
    with raises(ArgumentError, "no language-model head"):
        kn.load(str(tmp_path), device="cpu")
    full = tmp_path / "full"
    bert.model.save_pretrained(full)
    bert.tokenizer.save_pretrained(full)
    assert kn.load(full, device="cpu").masked  # a path object works too


# -- the CLI -------------------------------------------------------------------------------------------
def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "kn.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error"))


@pytest.mark.parametrize("args, name", [
    (["probe", CAUSAL, "-k", "0", "--model", "/nowhere"], "-k"),
    (["locate", CAUSAL, CAUSAL, CAUSAL, "-a", "France", "--share", "1.5"], "--share"),
    (["locate", CAUSAL, CAUSAL, CAUSAL, "-a", "France", "--threads", "-2"], "--threads"),
    (["run", "--steps", "0", "--out", "/tmp/x"], "--steps"),
])
def test_cli_rejects_bad_numbers(args, name):
    r = _cli(*args)
    assert r.returncode == 2 and name in r.stderr and "Traceback" not in r.stderr


def test_cli_errors_are_one_line(tmp_path):
    r = _cli("probe", CAUSAL, "--model", str(tmp_path / "missing"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("kn: error: could not load")
    r = _cli("probe", CAUSAL, "--model", "gemma-3-270m", "--device", "cuda:7")
    if not torch.cuda.is_available():
        assert r.returncode == 2 and "device" in r.stderr and r.stderr.strip().count("\n") == 0


def test_cli_sigint_says_how_to_resume(tmp_path, gpt2):
    model = tmp_path / "tiny"
    gpt2.model.save_pretrained(model)
    gpt2.tokenizer.save_pretrained(model)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kn.cli", "run", "--model", str(model), "--data", "builtin", "--steps", "400",
           "--out", str(out)]
    # a job started in the background by a non-interactive shell (nohup CI runs) inherits SIGINT ignored;
    # the child gets the default back, as a command typed at a terminal has it
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    config = out / "config.json"  # written once the run has started (the CLI's handler is in place)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not config.exists():
        time.sleep(0.02)
    assert config.exists() and proc.poll() is None, "the run never started, or ended before it could be stopped"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "run the same command again to resume" in err
    assert [l for l in err.splitlines() if l.startswith("kn:")] == [err.strip().splitlines()[-1]]


# -- kn.data.load / select_facts / kn.run / kn.load_run / kn.recording.record ----------------------------------
def test_data_and_run_arguments(gpt2, tmp_path):
    import kn.data
    from kn import recording
    from kn.data import select_facts

    facts = kn.data.load("builtin")
    with raises(TypeError, "data must be a string"):
        kn.data.load(None)
    with raises(ValueError, "data must be builtin"):
        kn.data.load("wikipedia")
    with raises(OSError, "no PARAREL patterns"):
        kn.data.load(f"pararel:{tmp_path / 'none'}")
    for bad in (0, -3, 2.5, True):
        with raises(ValueError, "per_relation"):
            select_facts(facts, per_relation=bad)
    assert {f.relation for f in select_facts(facts, relations="capital")} == {"capital"}  # one name, not letters
    with raises(ValueError, "relation 'nope'"):
        select_facts(facts, relations=["nope"])
    with raises(ValueError, "known=True needs the model"):
        select_facts(facts, known=True)
    with raises(ArgumentError, "out_dir"):
        kn.run(gpt2, facts, None)
    with raises(ArgumentError, "facts is empty"):
        kn.run(gpt2, [], tmp_path / "empty")
    with raises(ArgumentError, "language="):
        kn.run(gpt2, facts, tmp_path / "xx", language="xx")
    for kw, name in (({"steps": 0}, "steps"), ({"share": 2.0}, "share"), ({"method": "saliency"}, "method")):
        with raises((ValueError, TypeError), name):
            kn.run(gpt2, facts, tmp_path / "s", **kw)
    assert not (tmp_path / "s").exists() and not (tmp_path / "xx").exists()  # refused before writing anything
    with raises(FileNotFoundError, "holds no kn run"):
        kn.load_run(tmp_path)
    with raises(TypeError, "DataFrames"):
        recording.record(tmp_path / "rec", {"t": [1, 2]}, {})
