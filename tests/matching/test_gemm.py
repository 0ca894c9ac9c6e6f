"""oneDNN's products (matching/ml/gemm.py) against PyTorch's, and the choice between them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from matching.ml import gemm, kernels
from matching.ml.model import RALM
from matching.ml.train import listwise_loss
from tests.matching.test_kernels import inputs, make

needs_onednn = pytest.mark.skipif(gemm._operator() is None, reason="this PyTorch has no oneDNN Linear")


@pytest.fixture
def choose(monkeypatch):
    """Set SOCIALMATCH_GEMM for the test; the process's own choice comes back afterwards."""

    def set_choice(value: str) -> bool:
        monkeypatch.setenv("SOCIALMATCH_GEMM", value)
        gemm.enabled.cache_clear()
        return gemm.enabled()

    yield set_choice
    monkeypatch.undo()
    gemm.enabled.cache_clear()


def cpuinfo(vendor: str, flags: str) -> str:
    return f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n\nprocessor\t: 1\nvendor_id\t: {vendor}\n"


def test_onednn_where_mkl_runs_avx2_code_on_avx512():
    assert gemm._blas_at_half_width(cpuinfo("AuthenticAMD", "fpu sse avx2 avx512f avx512bw"))
    assert not gemm._blas_at_half_width(cpuinfo("GenuineIntel", "fpu sse avx2 avx512f avx512bw"))
    assert not gemm._blas_at_half_width(cpuinfo("AuthenticAMD", "fpu sse avx2 fma"))
    assert not gemm._blas_at_half_width("")


def test_the_choice_can_be_forced_and_a_wrong_one_is_refused(choose):
    assert choose("blas") is False
    if gemm._operator() is not None:
        assert choose("onednn") is True
    with pytest.raises(ValueError, match="SOCIALMATCH_GEMM='fast'"):
        choose("fast")


@needs_onednn
@pytest.mark.parametrize("rows", [1, 7, 300])
def test_linear_forward_and_gradients_match_pytorch(choose, rows):
    assert choose("onednn")
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 24, generator=g, requires_grad=True)
    weight = torch.randn(40, 24, generator=g, requires_grad=True)
    bias = torch.randn(40, generator=g, requires_grad=True)
    upstream = torch.randn(rows, 40, generator=g)

    out = gemm.linear(x, weight, bias)
    assert out.grad_fn is not None and type(out.grad_fn).__name__ == "_LinearBackward"
    grads = torch.autograd.grad(out, (x, weight, bias), upstream)
    expected = F.linear(x, weight, bias)
    expected_grads = torch.autograd.grad(expected, (x, weight, bias), upstream)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_products_on_strided_operands_and_the_linear_relu(choose):
    assert choose("onednn")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 70, generator=g)[:, 5:45]  # rows with a stride
    b = torch.randn(30, 40, generator=g).t()  # a transposed view
    torch.testing.assert_close(gemm.mm(a, b), a @ b, rtol=1e-5, atol=1e-5)
    weight, bias = torch.randn(16, 40, generator=g), torch.randn(16, generator=g)
    activated = gemm.linear_relu(a, weight, bias)
    torch.testing.assert_close(activated, torch.relu(a @ weight.t() + bias), rtol=1e-5, atol=1e-5)
    assert (activated >= 0).all() and (activated == 0).any()


@needs_onednn
def test_empty_batches_other_dtypes_and_autocast_keep_pytorch(choose):
    assert choose("onednn")
    weight = torch.randn(4, 3, requires_grad=True)
    empty = gemm.linear(torch.zeros(0, 3), weight)
    assert empty.shape == (0, 4) and type(empty.grad_fn).__name__ != "_LinearBackward"
    torch.backends.mkldnn.enabled = False  # PyTorch's own switch for oneDNN
    try:
        assert type(gemm.linear(torch.ones(2, 3), weight).grad_fn).__name__ != "_LinearBackward"
    finally:
        torch.backends.mkldnn.enabled = True
    doubles = gemm.linear(torch.randn(2, 3, dtype=torch.float64), weight.detach().double())
    assert doubles.dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gemm.linear(torch.randn(2, 3), weight).dtype == torch.bfloat16


@needs_onednn
def test_both_towers_and_the_loss_give_the_same_gradients_either_way(choose):
    """The whole training step's arithmetic under oneDNN and under PyTorch's BLAS."""
    config = make((5, 3, 4), dnn_hidden=(32, 16), dropout=0.0)  # the same arithmetic both times
    results = {}
    for choice in ("blas", "onednn"):
        choose(choice)
        torch.manual_seed(0)
        model = RALM(config).train()
        loss = listwise_loss(model.seed_embed(inputs(config, 64, seed=1)), model.target_embed(inputs(config, 64, seed=2)),
                             torch.randn(64), 0.1)
        loss.backward()
        results[choice] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (loss_blas, grads_blas), (loss_onednn, grads_onednn) = results["blas"], results["onednn"]
    torch.testing.assert_close(loss_onednn, loss_blas, rtol=1e-5, atol=1e-6)
    assert grads_onednn.keys() == grads_blas.keys() and len(grads_blas) > 20
    for name, grad in grads_blas.items():
        torch.testing.assert_close(grads_onednn[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@needs_onednn
def test_folded_inference_is_the_same_either_way(choose):
    config = make((5, 3, 4))
    embeddings = []
    for choice in ("blas", "onednn"):
        choose(choice)
        torch.manual_seed(0)
        model = RALM(config).eval()
        with torch.inference_mode():
            embeddings.append(model.target_embed(inputs(config, 200)))
    torch.testing.assert_close(embeddings[1], embeddings[0], rtol=1e-5, atol=1e-6)


@needs_onednn
def test_a_second_derivative_through_the_onednn_linear_is_refused(choose):
    assert choose("onednn")
    x, weight = torch.randn(5, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    (grad_x,) = torch.autograd.grad(gemm.linear(x, weight).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|differentiable"):
        grad_x.sum().backward()


@pytest.mark.parametrize("choice", ["blas", "onednn"])
def test_a_nan_feature_stays_nan_through_the_relu_on_both_paths(choose, choice):
    if choice == "onednn" and gemm._operator() is None:
        pytest.skip("this PyTorch has no oneDNN Linear")
    choose(choice)
    x = torch.tensor([[1.0, float("nan")], [1.0, -2.0], [2.0, 1.0]])
    out = gemm.linear_relu(x, torch.ones(3, 2), torch.zeros(3))
    assert out[0].isnan().all()
    assert torch.equal(out[1:], torch.tensor([[0.0, 0.0, 0.0], [3.0, 3.0, 3.0]]))


@pytest.mark.parametrize(("rows", "cols"), [(1024, 256), (37, 70), (1, 5), (64, 1)])
def test_the_tiled_transpose_matches_pytorch(rows, cols):
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows))
    assert torch.equal(kernels.transposed(x), x.t().contiguous())
    strided = torch.randn(rows, 2 * cols)[:, ::2]  # not contiguous: PyTorch's copy
    assert torch.equal(kernels.transposed(strided), strided.t().contiguous())


@pytest.mark.parametrize("choice", ["blas", "onednn"])
@pytest.mark.parametrize(("left", "right"), [(80, 124), (256, 128), (1024, 64)])
def test_products_down_the_rows_match_pytorch(choose, choice, left, right):
    """``a.T @ b`` both ways round: ``a`` the smaller operand (a weight gradient) or the larger
    (the loss's P.T @ seed)."""
    if choice == "onednn" and gemm._operator() is None:
        pytest.skip("this PyTorch has no oneDNN Linear")
    choose(choice)
    g = torch.Generator().manual_seed(left)
    a, b = torch.randn(300, left, generator=g), torch.randn(300, right, generator=g)
    torch.testing.assert_close(gemm.mm_tn(a, b), a.t() @ b, rtol=1e-5, atol=1e-4)
