"""The engine on the real packaged gemma-3-270m (slow: CI runs it)."""
import time

import numpy as np
import pytest

import kn
from kn import hooks

pytestmark = pytest.mark.slow

FACTS = {
    "France": ["Paris is the capital of", "The city of Paris is the capital of", "Paris is the capital city of",
               "Paris serves as the capital of", "Paris, the capital of"],
    "Japan": ["Tokyo is the capital of", "The city of Tokyo is the capital of", "Tokyo is the capital city of",
              "Tokyo serves as the capital of", "Tokyo, the capital of"],
    "Italian": ["The official language of Italy is", "In Italy, the official language is",
                "The language spoken in Italy is", "Most people in Italy speak"],
}
# for each fact, an unrelated control fact (another relation)
CONTROL = {"France": "Italian", "Japan": "Italian", "Italian": "France"}


@pytest.fixture(scope="module")
def lm():
    return kn.load("gemma-3-270m")


def test_probe_paris(lm):
    top3 = [p.token for p in kn.probe(lm, "Paris is the capital of", k=3)]
    print("top-3:", top3)
    assert "France" in top3


@pytest.fixture(scope="module")
def located(lm):
    out = {}
    for answer, prompts in FACTS.items():
        t0 = time.perf_counter()
        out[answer] = kn.locate(lm, prompts, answer)
        print(f"{answer}: {len(out[answer])} neurons in {time.perf_counter() - t0:.1f} s: {out[answer]}")
    return out


def test_neurons_found_for_every_fact(located):
    for answer, neurons in located.items():
        assert 1 <= len(neurons) <= 50, (answer, neurons)


def test_suppress_and_amplify_move_the_fact_not_the_control(lm, located):
    sup, amp, csup, camp = [], [], [], []
    for answer, neurons in located.items():
        c = CONTROL[answer]
        v = kn.verify(lm, FACTS[answer], answer, neurons, control_prompts=FACTS[c], control_answer=c)
        s = v.summary()
        print(answer, {k: round(x, 4) for k, x in s.items()})
        sup.append(s["suppression"])
        amp.append(s["amplification"])
        csup.append(s["control_suppression"])
        camp.append(s["control_amplification"])
    print(f"mean: suppression {np.mean(sup):+.3f}, amplification {np.mean(amp):+.3f}, "
          f"control {np.mean(csup):+.3f} / {np.mean(camp):+.3f}")
    assert np.mean(sup) < -0.2 and np.mean(amp) > 0.1
    assert abs(np.mean(csup)) < abs(np.mean(sup)) / 2
    assert abs(np.mean(camp)) < abs(np.mean(amp)) / 2
    assert hooks.count(lm.model) == 0


def test_cli(capsys):
    from kn.cli import main

    assert main(["probe", "Paris is the capital of", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "France" in out and "rank" in out
    assert main(["probe", "Paris is the capital of [MASK]"]) == 2
    assert "causal" in capsys.readouterr().err
