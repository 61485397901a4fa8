"""kn.head_product computes the output layer as W h^T: the same logits as linear (up to the float32 sum's
order), the same gradients, and only on the models kn.load makes."""
import copy
import pickle

import pytest
import torch
from torch import nn

import kn
from kn import head_product
from kn.testing import tiny_lm


@pytest.mark.parametrize("rows", [1, 2, 7, head_product.MAX_ROWS, head_product.MAX_ROWS + 1])
@pytest.mark.parametrize("bias", [False, True])
def test_product_is_linear(rows, bias):
    g = torch.Generator().manual_seed(rows)
    W = torch.randn(300, 24, generator=g)
    b = torch.randn(300, generator=g) if bias else None
    x = torch.randn(1, rows, 24, generator=g)
    want = (x.double() @ W.double().T + (b.double() if bias else 0)).float()  # from the definition, float64
    got = head_product.product(x, W, b)
    assert got.shape == (1, rows, 300) and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3])
def test_gradients_flow_as_through_linear(rows):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(50, 8, generator=g)
    x = torch.randn(rows, 8, generator=g, requires_grad=True)
    head_product.product(x, W).logsumexp(-1).sum().backward()
    got, x.grad = x.grad, None
    torch.nn.functional.linear(x, W).logsumexp(-1).sum().backward()
    torch.testing.assert_close(got, x.grad)


def test_other_dtypes_go_to_linear(monkeypatch):
    called = []
    real = torch.nn.functional.linear
    monkeypatch.setattr(head_product.F, "linear", lambda *a: called.append(1) or real(*a))
    head_product.product(torch.randn(2, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64))
    assert called


def test_load_installs_it_and_wrap_does_not(tmp_path):
    lm = tiny_lm("GPT-2")
    assert type(lm.head) is nn.Linear  # kn.wrap leaves a user's model as it is
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    loaded = kn.load(tmp_path / "m", device="cpu")
    assert type(loaded.head) is head_product.HeadLinear
    ids = torch.tensor([[3, 5, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(input_ids=ids).logits, lm.model(input_ids=ids).logits,
                                   rtol=1e-5, atol=1e-5)
    copy.deepcopy(loaded.model)
    assert type(pickle.loads(pickle.dumps(loaded.head))) is head_product.HeadLinear


def test_install_leaves_other_modules_alone():
    m = nn.Sequential(nn.Linear(3, 4))
    head_product.install(m)
    assert type(m) is nn.Sequential
