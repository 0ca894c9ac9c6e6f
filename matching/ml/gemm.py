"""Float32 matrix products on the CPU through oneDNN where PyTorch's BLAS runs them at half width.

PyTorch's CPU build runs float32 ``mm``, ``addmm`` and ``linear`` in MKL, and MKL chooses its code
by the processor's vendor: on AMD processors with AVX-512 (Zen 4, Zen 5) it runs its AVX2 code,
half the width of the cores. The same build carries oneDNN, which chooses by instruction set. On a
Zen 5 core pair the towers' products ran at 180 to 210 GFLOP/s in MKL and 380 to 430 in oneDNN
(docs/BENCHMARKS.md, "On the ninth machine"). On Intel processors MKL already runs AVX-512, and
on AVX2-only processors the two are level (the seventh session, Zen 3), so there nothing changes.

oneDNN is reached through ``torch.ops.mkldnn._linear_pointwise`` (``x @ w.T + b``), the operator PyTorch's own compiler emits for a Linear on the CPU; it is checked
for at first use and everything falls back to PyTorch's operators without it. The products where
oneDNN gains are those whose left operand is row-major: a Linear's forward and its input's
gradient, and the in-batch loss's logits and the seed side of its gradient. A product down the
rows (``a.T @ b``: a weight gradient ``dy.T @ x``, the loss's target side ``P.T @ seed``) was no
faster with ``a`` read transposed in place; ``mm_tn`` copies the smaller operand transposed
(``kernels.transposed``) and lets oneDNN read the other transposed in place, which it does at
full rate.

``SOCIALMATCH_GEMM`` overrides the choice: ``auto`` (the default, oneDNN on a non-Intel processor
with AVX-512), ``onednn`` or ``blas``. The two give the same products up to float32 rounding in
a different summation order (tests hold a product to 1e-5, the towers' gradients to 1e-4 relative).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from matching.ml import kernels

CHOICES = ("auto", "onednn", "blas")


@functools.cache
def _operator():
    """oneDNN's Linear, or None when this PyTorch has none or it does not answer a trial product
    as ``F.linear`` does (a private operator: its signature may change with PyTorch)."""
    if not torch.backends.mkldnn.is_available():
        return None
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None:
        return None
    x, w, b = torch.arange(6.0).view(2, 3), torch.arange(12.0).view(4, 3), torch.arange(4.0)
    try:
        ok = torch.equal(op(x, w, b, "none", [], ""), F.linear(x, w, b))
    except (RuntimeError, TypeError):
        ok = False
    return op if ok else None


def _blas_at_half_width(text: str | None = None) -> bool:
    """A non-Intel x86 processor with AVX-512 (from ``/proc/cpuinfo``, or ``text`` in its format):
    the one where MKL leaves half the width unused."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    vendor = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("vendor_id")), "")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool(vendor) and vendor != "GenuineIntel" and "avx512f" in flags


@functools.cache
def enabled() -> bool:
    """Whether float32 CPU products go to oneDNN in this process (see the module's docstring)."""
    choice = os.environ.get("SOCIALMATCH_GEMM", "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"SOCIALMATCH_GEMM={choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "blas":
        return False
    available = _operator() is not None
    if choice == "onednn" and not available:
        raise RuntimeError("SOCIALMATCH_GEMM=onednn, but this PyTorch has no oneDNN Linear")
    return available and (choice == "onednn" or _blas_at_half_width())


def _applies(*tensors: torch.Tensor) -> bool:
    return (
        enabled() and torch.backends.mkldnn.enabled and not torch.is_autocast_enabled("cpu")
        and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() == 2 and t.numel() for t in tensors)
    )


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none") -> torch.Tensor:
    return _operator()(x, weight, bias, activation, [], "")


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-d tensors, outside autograd (inside a Function's forward or backward)."""
    if _applies(a, b):
        return _onednn(a, b.t(), None)
    return torch.mm(a, b)


def mm_tn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a.T @ b`` for 2-d tensors with the same rows (a weight gradient ``dy.T @ x``; the loss's
    ``P.T @ seed``), outside autograd. oneDNN wants its left operand row-major and reads the right
    one transposed in place: so the smaller of the two is copied transposed, ``a`` as the left
    operand, or ``b`` for ``(b.T @ a).T`` with the result transposed back."""
    if not _applies(a, b):
        return torch.mm(a.t(), b)
    if a.numel() <= b.numel():
        return _onednn(kernels.transposed(a.contiguous()), b.t(), None)
    return kernels.transposed(_onednn(kernels.transposed(b.contiguous()), a.t(), None))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a 2-d ``x``, with gradients."""
    if _applies(x, weight) and (bias is None or bias.dtype == torch.float32):
        return _Linear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


def run(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, an ``nn.Linear`` (not a quantised one, nor a subclass) through ``linear``."""
    if type(module) is torch.nn.Linear:
        return linear(x, module.weight, module.bias)
    return module(x)


def linear_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``relu(x @ weight.T + bias)`` without gradients. The ReLU is PyTorch's on both paths, not
    oneDNN's fused one, which turns a NaN into 0: a person with a broken feature keeps a NaN
    embedding that shows, not one made of biases (the fused ReLU was under 1% faster here)."""
    z = _onednn(x, weight, bias) if _applies(x, weight) else torch.addmm(bias, x, weight.t())
    return z.relu_()


class _Linear(torch.autograd.Function):
    """A Linear in oneDNN, forward and backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    @once_differentiable  # no graph of its own: a second derivative raises rather than comes out 0
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = mm(grad, weight) if ctx.needs_input_grad[0] else None
        grad_weight = mm_tn(grad, x) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias
