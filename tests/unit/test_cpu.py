"""kn.cpu reads bf16 support from the CPU's flags; kn.load warns when bf16 weights would be emulated."""
import logging

import pytest
import torch

import kn
from kn import cpu
from kn.testing import tiny_lm


@pytest.fixture(scope="module")
def gpt2(one_thread):
    return tiny_lm("GPT-2")


def _cpuinfo(tmp_path, flags: str):
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor\t: 0\nmodel name\t: X\nflags\t\t: {flags}\n\n")
    return p


def test_flags_decide_bf16(tmp_path):
    assert cpu.bf16_native(_cpuinfo(tmp_path, "fpu sse2 avx2 avx512f avx512_bf16")) is True
    assert cpu.bf16_native(_cpuinfo(tmp_path, "fpu sse2 avx2 amx_bf16 amx_tile")) is True
    assert cpu.bf16_native(_cpuinfo(tmp_path, "fpu sse2 avx2 avx512f avx512bw")) is False
    assert cpu.bf16_native(tmp_path / "missing") is None
    assert "bf16 instructions" in cpu.describe()


def _saved(tmp_path, gpt2):
    gpt2.model.save_pretrained(tmp_path / "m")
    gpt2.tokenizer.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_load_warns_on_emulated_bf16(tmp_path, gpt2, monkeypatch, caplog):
    path = _saved(tmp_path, gpt2)
    caplog.set_level(logging.WARNING, logger="kn.models")
    monkeypatch.setattr(cpu, "bf16_native", lambda: False)
    kn.load(path, device="cpu", dtype=torch.bfloat16)
    assert any("emulated" in r.getMessage() for r in caplog.records)
    caplog.clear()
    kn.load(path, device="cpu")  # float32: nothing to say
    monkeypatch.setattr(cpu, "bf16_native", lambda: True)
    kn.load(path, device="cpu", dtype=torch.bfloat16)
    assert not [r for r in caplog.records if "emulated" in r.getMessage()]
