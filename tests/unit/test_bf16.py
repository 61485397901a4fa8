"""bfloat16 weights (`kn.load(..., dtype=torch.bfloat16)`, `--dtype bfloat16`): attribution runs on every
family of the table and agrees with float32 (scores within a few percent of the largest, the same
coarse sets on these tiny models); scores come back float32."""
import pytest
import torch

import kn
from kn.localization import coarse
from kn.testing import tiny_lm

FAMILIES = ["GPT-2", "Llama", "BERT", "Gemma-3"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on a busy 2-core machine: one thread (tests/conftest.py)."""


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_agrees_with_fp32(family):
    lm = tiny_lm(family, initializer_range=0.2)
    prompt, answer = ("Paris is the capital of [MASK] .", "France") if lm.masked else ("Paris is the capital of", " France")
    s32 = kn.attribute(lm, prompt, answer)
    lm16 = kn.wrap(lm.model.to(torch.bfloat16), lm.tokenizer, name="bf16")
    s16 = kn.attribute(lm16, prompt, answer)
    assert s16.dtype == torch.float32 and torch.isfinite(s16).all()
    assert float((s16 - s32).abs().max() / s32.abs().max()) < 0.1
    a, b = coarse(s32), coarse(s16)
    assert len(a & b) / max(1, len(a | b)) >= 0.8
