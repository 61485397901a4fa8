"""kn.locate and the `kn locate` command: one computation (`locate_with_scores`), the command's table
read from it."""
from __future__ import annotations

import pytest
import torch

import kn
from kn import cli
from kn.localization import coarse, locate_with_scores, refine
from kn.testing import tiny_lm

PROMPTS = ["Paris is the capital of", "Paris is located in", "Paris is a city in"]


@pytest.fixture(scope="module")
def gpt2(one_thread):
    return tiny_lm("GPT-2")


def test_locate_with_scores_keeps_what_locate_found_the_neurons_from(gpt2):
    found = locate_with_scores(gpt2, PROMPTS, "France", steps=3, threshold=0.1, share=0.5)
    by_hand = [kn.attribute(gpt2, p, "France", steps=3) for p in PROMPTS]
    assert all(torch.equal(a, b) for a, b in zip(found.scores, by_hand))
    assert found.sets == [coarse(s, 0.1) for s in by_hand]
    assert found.neurons == refine(found.sets, 0.5) == kn.locate(gpt2, PROMPTS, "France", steps=3, threshold=0.1,
                                                                  share=0.5)
    assert found.neurons, "the check needs neurons"
    assert torch.equal(found.mean_scores(), torch.stack(by_hand).mean(0))
    assert found.prompt_counts() == {n: sum(n in s for s in found.sets) for n in found.neurons}
    seen = []
    locate_with_scores(gpt2, PROMPTS, "France", steps=3, on_prompt=lambda p, s: seen.append((p, s)))
    assert [p for p, _ in seen] == PROMPTS and [s for _, s in seen] == [coarse(s, 0.2) for s in by_hand]


def test_cli_locate_prints_the_table_of_locate(gpt2, tmp_path, capsys):
    model = tmp_path / "tiny"
    gpt2.model.save_pretrained(model)
    gpt2.tokenizer.save_pretrained(model)
    argv = ["locate", *PROMPTS, "-a", "France", "--model", str(model), "--steps", "3", "--threshold", "0.1",
            "--share", "0.5", "--threads", "1", "--verify"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    lm = kn.load(str(model), device="cpu")
    found = locate_with_scores(lm, PROMPTS, "France", steps=3, threshold=0.1, share=0.5)
    mean, counts = found.mean_scores(), found.prompt_counts()
    rows = [f"{l}  {i}  {float(mean[l, i]):.4f}  {counts[(l, i)]}/3" for l, i in found.neurons]
    lines = out.splitlines()
    assert lines[0].startswith(f"{lm.name}: {len(found.neurons)} knowledge neurons of 'France' from 3 prompts (")
    assert lines[1].split() == ["layer", "neuron", "mean", "score", "prompts"]
    assert [" ".join(l.split()) for l in lines[3:3 + len(rows)]] == [" ".join(r.split()) for r in rows]
    assert lines[3 + len(rows)].startswith("suppress: ") and "amplify x2: " in lines[3 + len(rows)]
    assert [l.split(" neurons pass")[0].strip() for l in err.splitlines() if "coarse filter" in l] == \
        [str(len(s)) for s in found.sets]
