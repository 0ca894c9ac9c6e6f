"""Compiled kernels for the towers' field-attention layers (``kernels.cpp``).

In eval mode without gradients, each of a tower's two attention layers (projections, per-head
scores, softmax, mixing, output projection, residual, LayerNorm) runs as one C++ pass per person
instead of a dozen PyTorch operators over the whole batch: with eight tokens of sixteen, PyTorch's
cost is memory passes and tiny batched matrix products, not arithmetic (docs/BENCHMARKS.md,
Model). With gradients, the same layer has a compiled forward and backward. Both agree with
PyTorch's operators to float32 rounding (tests/matching/test_kernels.py).

1. ``library(fields, width, heads)`` compiles ``kernels.cpp`` for that shape once per source,
   compiler and CPU into the user's cache directory (``$XDG_CACHE_HOME/socialmatch`` or
   ``~/.cache/socialmatch``) with ``-march=native``, writing to a temporary file and renaming, so
   processes starting together never load half a file; builds not loaded for ``STALE_DAYS`` are
   removed when a new one is made. Where no C++ compiler works it logs once
   and returns None, and the towers use PyTorch; so do shapes the kernel does not take
   (``supports``).
2. ``field_attention(...)`` returns the layer's output and attention weights, computed on
   ``torch.get_num_threads()`` threads of PyTorch's own OpenMP runtime (the library is built with
   ``-fopenmp`` and loaded after torch, whose ``libgomp.so.1`` it then shares; a thread pool of
   our own ran no faster than one thread in training, its threads competing with PyTorch's
   still-spinning workers for the two cores).
3. ``attention_layer(...)``, for training: the same layer with attention dropout, as an
   autograd Function whose backward gives the gradients of the input and of every parameter.
   ``batch_norm_relu_dropout(...)``: a DNN layer's activation in training, likewise.

4. ``dropout_multipliers(shape, p)``: the masks of ``model.Dropout``, from a counter-based hash;
   ``bag_gather(...)``: a training batch's id bags (``inputs.UserInputs.batch``) in one pass;
   ``bag_backward(...)``: their embedding tables' gradient.

``disabled()`` switches the kernels off for a block (tests compare both paths with it).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.cpp")
FLAGS = ("-O3", "-march=native", "-std=c++17", "-fPIC", "-shared", "-fno-math-errno", "-fopenmp")
MIN_ROWS_PER_THREAD = 512  # below this, waking another OpenMP thread costs more than it saves
STALE_DAYS = 30  # a build not loaded for this long is removed when another is built

_lock = threading.Lock()
_libraries: dict[tuple[int, int, int], ctypes.CDLL | None] = {}  # by shape, (0, 0, 0) shape-free; None: cannot build
_enabled = True

_float_p = ctypes.POINTER(ctypes.c_float)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "socialmatch"


def _cpu_identity() -> str:
    """What ``-march=native`` compiles for: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _build(compiler: str, shape: tuple[int, int, int] | None) -> Path:
    source = SOURCE.read_bytes()
    flags = list(FLAGS)
    if shape is not None:
        flags += [f"-D{name}={value}" for name, value in zip(("FIELDS", "WIDTH", "HEADS"), shape, strict=True)]
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), version.encode(), _cpu_identity().encode()]))
    target = _cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        with contextlib.suppress(OSError):
            os.utime(target)  # in use: kept by _prune
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=target.stem, suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run(
            [compiler, *flags, "-o", temporary, str(SOURCE)], check=True, capture_output=True, text=True,
            timeout=120,
        )
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _prune(target.parent)
    return target


def _prune(directory: Path, now: float | None = None) -> list[Path]:
    """Remove builds not loaded for ``STALE_DAYS`` (every load touches its file): those of
    earlier sources, compilers or CPUs would otherwise pile up, a new one each time
    ``kernels.cpp`` changes. Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    for old in directory.glob("kernels-*.so"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > STALE_DAYS * 86_400:
                old.unlink()
                removed.append(old)
    return removed


MAX_WIDTH = 64  # the training backward keeps (3 W^2 + W^2 F / 8) floats of sums per thread on its stack


def supports(fields: int, width: int, heads: int) -> bool:
    """Shapes ``kernels.cpp`` takes: token width and head width multiples of eight, widths up to
    ``MAX_WIDTH`` (at 64 and 64 fields a thread's sums are 1.1 MB; at 256 they would be 17 MB,
    past a thread's stack)."""
    return (1 <= fields <= 64 and heads >= 1 and 8 <= width <= MAX_WIDTH and width % heads == 0
            and width % 8 == 0 and (width // heads) % 8 == 0)


def library(fields: int, width: int, heads: int) -> ctypes.CDLL | None:
    """The kernels compiled for this shape, built on first use; None where they cannot be."""
    return _load((fields, width, heads))


def _load(shape: tuple[int, int, int] | None) -> ctypes.CDLL | None:
    """The library for ``shape`` (None: only the shape-free part, the dropout multipliers)."""
    key = shape or (0, 0, 0)
    if key in _libraries:
        return _libraries[key]
    with _lock:
        if key in _libraries:
            return _libraries[key]
        lib = None
        compiler = _compiler()
        try:
            if compiler is None:
                raise OSError("no C++ compiler (c++, g++ or clang++) on PATH")
            lib = ctypes.CDLL(str(_build(compiler, shape)))
            shape_args = [ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
            i64_p, i32_p, c_int = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int32), ctypes.c_int
            signatures = {  # name: (return type, argument types)
                "dropout_multipliers": (None, [ctypes.c_int64, c_int, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float, _float_p]),
                "bag_gather": (ctypes.c_int64, [ctypes.c_int64, i64_p, i32_p, i32_p, _float_p, i32_p, i64_p,
                                                ctypes.c_uint64, ctypes.c_uint32, c_int, i64_p, _float_p, i64_p]),
                "bag_backward": (None, [ctypes.c_int64, i64_p, ctypes.c_int64, i64_p, _float_p, c_int, _float_p, c_int,
                                        _float_p]),
                "lazy_adam_rows": (None, [ctypes.c_int64, c_int, c_int, i64_p, *[_float_p] * 4,
                                          *[ctypes.c_float] * 7]),
                "softmax_rows": (None, [ctypes.c_int64, ctypes.c_int64, c_int, _float_p, _float_p]),
                "transpose": (None, [ctypes.c_int64, ctypes.c_int64, c_int, _float_p, _float_p]),
                "bn_relu_dropout_forward": (None, [ctypes.c_int64, c_int, c_int, *[_float_p] * 3, ctypes.c_float,
                                                   ctypes.c_uint64, ctypes.c_uint32, ctypes.c_float, *[_float_p] * 3]),
                "bn_relu_dropout_backward": (None, [ctypes.c_int64, c_int, c_int, *[_float_p] * 4, ctypes.c_uint64,
                                                    ctypes.c_uint32, ctypes.c_float, *[_float_p] * 5]),
            }
            if shape is not None:
                signatures |= {
                    "field_attention_layer": (c_int, [*shape_args, *[_float_p] * 8, ctypes.c_float, _float_p, c_int,
                                                      *[_float_p] * 6]),
                    "attention_layer_backward": (c_int, [*shape_args, *[_float_p] * 12, c_int, _float_p, _float_p]),
                    "attention_layer_grads": (c_int, []),
                }
            for name, (restype, argtypes) in signatures.items():
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = restype, argtypes
        except (OSError, subprocess.SubprocessError) as exc:
            lib = None
            detail = getattr(exc, "stderr", "") or ""
            log.warning("tower kernels unavailable, using PyTorch's operators: %s %s", exc, detail[:500])
        _libraries[key] = lib
    return lib


def _shape_free() -> ctypes.CDLL | None:
    """The shape-free library (dropout, bags), None where it cannot be built or is ``disabled()``."""
    return _load(None) if _enabled else None


def padded(fields: int) -> int:
    """The fields rounded up to the kernels' vectors of eight (the last axis of their attention
    weights and dropout masks)."""
    return -(-fields // 8) * 8


def bag_gather(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, members: np.ndarray, rows: np.ndarray,
    hide: np.ndarray | None, dropout: float, seed: int, *, weights: bool, renormalise: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The kept members' embedding rows, each row's offset and (``weights``) the members' weights
    of CSR ``rows``, as ``inputs._bag`` computes them (``kernels.cpp`` says how); None where the
    kernels cannot be built or the arrays are not int32 / int32 / float32 / int32."""
    lib = _shape_free()
    typed = (indptr.dtype == np.int32 and indices.dtype == np.int32 and data.dtype == np.float32
             and members.dtype == np.int32)
    if lib is None or not typed:
        return None
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    most = int((indptr[rows + 1] - indptr[rows]).sum())
    index, offsets = np.empty(most, dtype=np.int64), np.empty(len(rows), dtype=np.int64)
    weight = np.empty(most if weights else 0, dtype=np.float32)
    hidden = None if hide is None else np.ascontiguousarray(hide, dtype=np.int64)

    i64, i32 = ctypes.c_int64, ctypes.c_int32
    arrays = [np.ascontiguousarray(a) for a in (indptr, indices, data, members)]  # alive until the call returns
    kept = lib.bag_gather(
        len(rows), _pointer(rows, i64), _pointer(arrays[0], i32), _pointer(arrays[1], i32), _pointer(arrays[2]),
        _pointer(arrays[3], i32), _pointer(hidden, i64), seed & (2**64 - 1), round(dropout * 65536),
        int(renormalise), _pointer(index, i64), _pointer(weight) if weights else None, _pointer(offsets, i64),
    )
    return index[:kept], offsets, weight[:kept]


def bag_backward(
    rows: int, index: torch.Tensor, offsets: torch.Tensor, per_sample: torch.Tensor | None, mean: bool,
    grad: torch.Tensor,
) -> torch.Tensor | None:
    """The (rows, D) gradient of an embedding table used as bags (``model._BagFunction``); None
    where the kernels cannot be built."""
    lib = _shape_free()
    if lib is None:
        return None
    index, offsets = index.contiguous().long(), offsets.contiguous().long()
    grad = grad.detach().contiguous().float()
    weights = None if per_sample is None or mean else per_sample.detach().contiguous().float()
    out = torch.zeros(rows, grad.shape[1])
    lib.bag_backward(
        len(offsets), _pointer(offsets, ctypes.c_int64), len(index), _pointer(index, ctypes.c_int64),
        _pointer(weights), int(mean), _pointer(grad), grad.shape[1], _pointer(out),
    )
    return out


def _plain(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can read these tensors as they are: contiguous float32 on the CPU."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)


def softmax_rows_(x: torch.Tensor) -> torch.Tensor | None:
    """Each row of the (rows, cols) float32 ``x`` replaced in place by its softmax; returns the
    rows' log-sum-exp (rows,). None, and ``x`` untouched, where the kernels cannot be built or
    ``x`` is not a contiguous float32 matrix on the CPU."""
    lib = _shape_free()
    if lib is None or x.dim() != 2 or not _plain(x):
        return None
    lse = torch.empty(x.shape[0], dtype=torch.float32)
    lib.softmax_rows(x.shape[0], x.shape[1], _threads(x.numel() // 1024), _pointer(x), _pointer(lse))
    return lse


def transposed(x: torch.Tensor) -> torch.Tensor:
    """``x.t().contiguous()`` for a 2-d tensor: in tiles (``kernels.cpp``) for a contiguous float32
    one on the CPU, else by PyTorch."""
    lib = _shape_free()
    if lib is None or x.dim() != 2 or not _plain(x):
        return x.t().contiguous()
    out = torch.empty(x.shape[1], x.shape[0], dtype=torch.float32)
    lib.transpose(x.shape[0], x.shape[1], _threads(x.numel() // 2048), _pointer(x), _pointer(out))
    return out


def lazy_adam_rows(
    rows: torch.Tensor, grad: torch.Tensor, param: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
    *, lr: float, betas: tuple[float, float], eps: float, weight_decay: float, correction1: float,
    correction2: float,
) -> bool:
    """``train.LazyAdam``'s step on the distinct ``rows`` of a (rows, width) table in place, in one
    pass (``kernels.cpp`` has the formula); False, and nothing done, where the kernels cannot be
    built or the tensors are not contiguous float32 on the CPU."""
    lib = _shape_free()
    if lib is None or not _plain(grad, param, exp_avg, exp_avg_sq):
        return False
    rows = rows.contiguous().long()
    lib.lazy_adam_rows(
        len(rows), param.shape[1], _threads(len(rows)), _pointer(rows, ctypes.c_int64), _pointer(grad),
        _pointer(param), _pointer(exp_avg), _pointer(exp_avg_sq), lr, betas[0], betas[1], eps, weight_decay,
        correction1, correction2,
    )
    return True


def dropout_multipliers(shape: tuple[int, ...], p: float) -> torch.Tensor | None:
    """Dropout's multipliers for a tensor of ``shape``: 0 with probability ``p`` (to 1/65536),
    else ``1 / (1 - p)``; the seed is drawn from PyTorch's default generator, so
    ``torch.manual_seed`` fixes them. None where the kernels cannot be built (or ``disabled()``)."""
    lib = _shape_free()
    if lib is None:
        return None
    out = torch.empty(shape)
    n = out.numel()
    if n >= 1 << 33:
        return None
    seed = _random_seed()
    lib.dropout_multipliers(n, _threads(n // 64), seed, round(p * 65536), 1.0 / (1.0 - p), _pointer(out))
    return out


def _random_seed() -> int:
    """64 bits from PyTorch's default generator (``torch.manual_seed`` fixes the kernels' draws)."""
    return int(torch.empty((), dtype=torch.int64).random_(-(2**63), None)) & (2**64 - 1)


class _BatchNormReluDropout(torch.autograd.Function):
    """Training-mode BatchNorm, ReLU and dropout of a DNN layer (``kernels.cpp`` has the formulas)."""

    @staticmethod
    def forward(ctx, z, weight, bias, eps, p):  # type: ignore[override]
        lib = _shape_free()
        assert lib is not None
        n, w = z.shape
        threshold, scale = round(p * 65536), 1.0 / (1.0 - p)
        seed = _random_seed() if threshold else 0
        threads = _threads(n)
        y, scratch = torch.empty_like(z), torch.empty(threads, 3 * w)
        stats = torch.empty(3, w)  # the batch's mean, biased variance, inverse standard deviation
        lib.bn_relu_dropout_forward(
            n, w, threads, _pointer(z), _pointer(weight), _pointer(bias), eps, seed, threshold, scale, _pointer(y),
            _pointer(stats), _pointer(scratch),
        )
        ctx.save_for_backward(z, weight, bias, stats)
        ctx.random = (seed, threshold, scale)
        ctx.mark_non_differentiable(stats)
        return y, stats

    @staticmethod
    def backward(ctx, grad, _grad_stats):  # type: ignore[override]
        z, weight, bias, stats = ctx.saved_tensors
        lib = _shape_free()
        n, w = z.shape
        threads = _threads(n)
        grad = grad.contiguous()
        dz, dweight, dbias, scratch = torch.empty_like(z), torch.empty(w), torch.empty(w), torch.empty(threads, 3 * w)
        lib.bn_relu_dropout_backward(
            n, w, threads, _pointer(z), _pointer(stats), _pointer(weight), _pointer(bias), *ctx.random,
            _pointer(grad), _pointer(dz), _pointer(dweight), _pointer(dbias), _pointer(scratch),
        )
        return dz, dweight, dbias, None, None


def batch_norm_relu_dropout(z: torch.Tensor, norm: torch.nn.BatchNorm1d, p: float) -> torch.Tensor | None:
    """``Dropout(p)(relu(norm(z)))`` for a BatchNorm in training mode, updating its running
    statistics as PyTorch does; None where this does not apply (kernels not built or disabled,
    not float32 on the CPU, a width not a multiple of 8, fewer than two rows, no running
    statistics or affine parameters, ``momentum=None``), and the caller runs PyTorch's operators."""
    lib = _shape_free()
    n, w = z.shape
    eligible = (
        lib is not None and z.device.type == "cpu" and z.dtype == torch.float32 and w % 8 == 0 and n > 1
        and norm.training and norm.affine and norm.track_running_stats and norm.momentum is not None
        and norm.weight.dtype == torch.float32 and 0.0 <= p < 1.0
    )
    if not eligible:
        return None
    y, stats = _BatchNormReluDropout.apply(z.contiguous(), norm.weight, norm.bias, norm.eps, p)
    assert norm.running_mean is not None and norm.running_var is not None and norm.num_batches_tracked is not None
    with torch.no_grad():
        norm.num_batches_tracked.add_(1)
        norm.running_mean.lerp_(stats[0], norm.momentum)
        norm.running_var.lerp_(stats[1] * (n / (n - 1)), norm.momentum)  # unbiased, as PyTorch keeps it
    return y


def available(fields: int, width: int, heads: int) -> bool:
    """Whether the attention kernels (``field_attention``, ``attention_layer``) can run this
    shape here (and are not ``disabled()``)."""
    return _enabled and supports(fields, width, heads) and library(fields, width, heads) is not None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the block with PyTorch's operators only."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def _pointer(a: torch.Tensor | np.ndarray | None, kind: type = ctypes.c_float):
    """A C pointer to a contiguous tensor's or array's first element (null for None); the caller
    keeps the tensor or array alive until the call returns."""
    if a is None:
        return None
    address = a.data_ptr() if isinstance(a, torch.Tensor) else a.ctypes.data
    return ctypes.cast(address, ctypes.POINTER(kind))


def field_attention(
    x: torch.Tensor,
    qkv: torch.nn.Linear,
    product_weights: torch.Tensor | None,
    out: torch.nn.Linear,
    norm: torch.nn.LayerNorm,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``norm(attention(x) + x)`` and the attention weights, (B, F, D) -> (B, F, D), (B, H, F, F).

    ``product_weights`` (H, 1, d) makes it the productive attention; None, plain self-attention.
    Call only when ``available(F, D, heads)``, under ``torch.no_grad()`` or ``torch.inference_mode()``.
    """
    b, f, d = x.shape
    lib = library(f, d, heads)
    assert lib is not None, "field_attention called without the kernel"
    x = x.contiguous().float()
    head, scale = d // heads, (d // heads) ** -0.5
    productive = product_weights is not None
    pw = product_weights.reshape(heads, head) if productive else torch.ones(heads, head)
    args = _layer_weights(qkv.weight, qkv.bias, pw, scale, out.weight, out.bias, norm.weight, norm.bias)
    y = torch.empty_like(x)
    weights = torch.empty(b, heads, f, padded(f))  # key by query, as the kernel writes them

    status = lib.field_attention_layer(  # no mask, nothing kept for a backward
        b, _threads(b), f, d, heads, _pointer(x), *[_pointer(w) for w in args], norm.eps, None, int(productive),
        _pointer(y), _pointer(weights), None, None, None, None,
    )
    _check(status, (f, d, heads))
    return y, weights[..., :f].transpose(-1, -2)


def _layer_weights(
    qkv_weight: torch.Tensor, qkv_bias: torch.Tensor, product_weights: torch.Tensor, scale: float,
    out_weight: torch.Tensor, out_bias: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor,
) -> list[torch.Tensor]:
    """An attention layer's parameters as ``field_attention_layer`` reads them, in its argument
    order: contiguous float32, the qkv projection transposed (input-major), the product weights
    (H, d; ones for self-attention) multiplied by the score ``scale``."""
    raw = (qkv_weight.t(), qkv_bias, product_weights * scale, out_weight, out_bias, norm_weight, norm_bias)
    return [t.detach().contiguous().float() for t in raw]


def _threads(b: int) -> int:
    """PyTorch's intra-op thread count, fewer for small batches (the library runs on the same
    OpenMP runtime and releases the GIL)."""
    return max(1, min(torch.get_num_threads(), b // MIN_ROWS_PER_THREAD))


def _check(status: int, shape: tuple[int, int, int]) -> None:
    if status != 0:
        raise ValueError(f"the attention kernel was built for another shape than {shape}")


class _AttentionLayer(torch.autograd.Function):
    """A whole field-attention layer with LayerNorm, ``norm(attention(x) + x)``, for training
    (``kernels.cpp`` has the backward's formulas)."""

    @staticmethod
    def forward(ctx, x, wqkv, bqkv, pw, wout, bout, ln_weight, ln_bias, mask, eps, heads, productive):  # type: ignore[override]
        b, f, d = x.shape
        lib = library(f, d, heads)
        assert lib is not None
        scale, p = (d // heads) ** -0.5, padded(f)
        y, attention = torch.empty_like(x), torch.empty(b, heads, f, p)
        qkv, mixed_t, xhat_t, istd = torch.empty(b, f, 3 * d), torch.empty(b, d, p), torch.empty(b, d, p), torch.empty(b, p)
        weights = _layer_weights(wqkv, bqkv, pw, scale, wout, bout, ln_weight, ln_bias)
        pws = weights[2]  # the scaled product weights, which the backward reads too
        status = lib.field_attention_layer(
            b, _threads(b), f, d, heads, _pointer(x), *[_pointer(w) for w in weights], eps, _pointer(mask),
            int(productive), _pointer(y), _pointer(attention), _pointer(qkv), _pointer(mixed_t), _pointer(xhat_t),
            _pointer(istd),
        )
        _check(status, (f, d, heads))
        ctx.save_for_backward(x, wqkv, pws, wout, ln_weight, mask, attention, qkv, mixed_t, xhat_t, istd)
        ctx.heads, ctx.productive, ctx.scale = heads, productive, scale
        ctx.mark_non_differentiable(attention)
        return y, attention

    @staticmethod
    def backward(ctx, grad_y, _grad_attention):  # type: ignore[override]
        x, wqkv, pws, wout, ln_weight, mask, attention, qkv, mixed_t, xhat_t, istd = ctx.saved_tensors
        b, f, d = x.shape
        lib = library(f, d, ctx.heads)
        threads = _threads(b)
        grad_y = grad_y.contiguous()
        # Zeros, not empty: each OpenMP thread writes its own row of parameter sums, and the
        # runtime may start fewer threads than asked (OMP_THREAD_LIMIT, OMP_DYNAMIC, a call from
        # inside another parallel region); the rows nobody wrote must add nothing.
        dx, partial = torch.empty_like(x), torch.zeros(threads, lib.attention_layer_grads())
        wqkv, wout, ln_weight = (t.detach().contiguous().float() for t in (wqkv, wout, ln_weight))
        status = lib.attention_layer_backward(
            b, threads, f, d, ctx.heads, _pointer(x), _pointer(grad_y), _pointer(wqkv), _pointer(pws),
            _pointer(wout), _pointer(ln_weight), _pointer(mask), _pointer(attention),
            _pointer(qkv), _pointer(mixed_t), _pointer(xhat_t), _pointer(istd), int(ctx.productive), _pointer(dx),
            _pointer(partial),
        )
        _check(status, (f, d, ctx.heads))
        dwqkv, dbqkv, dwout, dbout, dln_w, dln_b, dpw = partial.sum(0).split([3 * d * d, 3 * d, d * d, d, d, d, d])
        grad_pw = dpw.view(ctx.heads, d // ctx.heads) * ctx.scale if ctx.productive and ctx.needs_input_grad[3] else None
        return (dx, dwqkv.view(3 * d, d), dbqkv, grad_pw, dwout.view(d, d), dbout, dln_w, dln_b,
                None, None, None, None)


def attention_layer(
    x: torch.Tensor, qkv: torch.nn.Linear, product_weights: torch.Tensor | None, out: torch.nn.Linear,
    norm: torch.nn.LayerNorm, heads: int, mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``norm(attention(x) + x)`` with gradients for every input and parameter, and the attention
    weights (B, H, F, F) before dropout (not differentiable, for inspection): the training
    counterpart of ``field_attention``. ``product_weights`` (H, 1, d) makes it the productive
    attention; ``mask`` (B, H, F, P) holds dropout multipliers (0 or 1 / (1 - p)) by key then
    query, P = F rounded up to 8, or None.
    Call only when ``available(F, D, heads)``."""
    f, width = x.shape[1], x.shape[2]
    productive = product_weights is not None
    pw = product_weights.view(heads, width // heads) if productive else torch.ones(heads, width // heads)
    y, weights = _AttentionLayer.apply(
        x.contiguous().float(), qkv.weight, qkv.bias, pw, out.weight, out.bias, norm.weight, norm.bias,
        mask, norm.eps, heads, productive,
    )
    return y, weights[..., :f].transpose(-1, -2)


__all__ = [
    "attention_layer", "available", "bag_backward", "bag_gather", "batch_norm_relu_dropout", "disabled",
    "dropout_multipliers", "field_attention", "lazy_adam_rows", "library", "padded", "softmax_rows_", "supports",
    "transposed",
]
