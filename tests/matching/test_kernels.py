"""The compiled attention kernel (matching/ml/kernels.cpp) against PyTorch's operators."""

from __future__ import annotations

import contextlib
import logging
import os
import time

import pytest
import torch

from matching.ml import kernels
from matching.ml.model import RALM, ModelConfig, TowerInput


def make(groups: tuple[int, ...], *, bags: bool = True, cells: bool = True, **overrides: object) -> ModelConfig:
    values: dict[str, object] = {
        "group_dims": groups, "venue_buckets": 50 if bags else 0, "user_buckets": 40 if bags else 0,
        "cell_buckets": 32 if cells else 0, "dnn_hidden": (32, 16), "embedding_dim": 8, "pair_dim": 3,
        "rank_hidden": (8,), **overrides,
    }
    return ModelConfig(**values)  # type: ignore[arg-type]


def inputs(config: ModelConfig, b: int, seed: int = 0) -> TowerInput:
    g = torch.Generator().manual_seed(seed)
    x = TowerInput(dense=torch.randn(b, sum(config.group_dims), generator=g))
    if config.venue_buckets:
        sizes = torch.randint(0, 6, (b,), generator=g)
        x.venue_offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)[:-1]])
        x.venue_index = torch.randint(0, config.venue_buckets, (int(sizes.sum()),), generator=g)
        x.venue_weights = torch.rand(int(sizes.sum()), generator=g)
        friends = torch.randint(0, 4, (b,), generator=g)
        x.friend_offsets = torch.cat([torch.zeros(1, dtype=torch.long), friends.cumsum(0)[:-1]])
        x.friend_index = torch.randint(0, config.user_buckets, (int(friends.sum()),), generator=g)
    if config.cell_buckets:
        x.cells = torch.randint(0, config.cell_buckets, (b,), generator=g)
    return x


def trained_looking(config: ModelConfig) -> RALM:
    """A model whose weights are far from their initial values (LayerNorm, product weights, biases)."""
    torch.manual_seed(0)
    model = RALM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def both_paths(model: RALM, x: TowerInput) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    tower = model.target_tower
    with torch.inference_mode():
        fused = (tower(x), tower.self_attention.last_weights, tower.productive.last_weights)
        with kernels.disabled():
            plain = (tower(x), tower.self_attention.last_weights, tower.productive.last_weights)
    return fused, plain


@pytest.mark.parametrize(
    ("config", "b"),
    [
        (make((25, 22, 10, 16, 51)), 3000),  # the default model: 8 fields of 16, two heads; two threads
        (make((25, 22, 10, 16, 51)), 1),
        (make((25, 22, 10, 16, 51), bags=False), 700),  # 6 fields
        (make((4, 3), bags=False, cells=False, token_dim=8, heads=1), 50),  # 2 fields of 8
        (make((5, 6, 7, 3, 2, 4, 8), token_dim=32, heads=4), 300),  # 10 fields: two score vectors
        (make((5, 6, 7), token_dim=16, heads=1), 33),
    ],
    ids=["default", "one-person", "six-fields", "two-fields", "ten-fields-32x4", "one-head"],
)
def test_kernel_agrees_with_pytorch(config: ModelConfig, b: int) -> None:
    model = trained_looking(config)
    assert kernels.available(config.n_fields, config.token_dim, config.heads)
    fused, plain = both_paths(model, inputs(config, b))
    for got, want in zip(fused, plain, strict=True):
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=2e-5, rtol=1e-4), (got - want).abs().max()
    weights = fused[2]
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5)


def test_extreme_scores_stay_finite_and_agree() -> None:
    """Scores hundreds apart: the softmax's exponentials underflow to (nearly) zero, never NaN. (Float
    rounding of scores in the thousands moves the weights by up to 1e-4 between the two paths.)"""
    config = make((25, 22, 10, 16, 51))
    model = trained_looking(config)
    with torch.no_grad():
        model.target_tower.productive.product_weights.mul_(400.0)
    fused, plain = both_paths(model, inputs(config, 64))
    assert torch.isfinite(fused[0]).all()
    assert torch.allclose(fused[0], plain[0], atol=1e-3)
    assert torch.allclose(fused[2], plain[2], atol=1e-3)


def test_shapes_the_kernel_does_not_take_use_pytorch() -> None:
    config = make((3, 4), token_dim=8, heads=2)  # heads of width 4
    assert not kernels.supports(config.n_fields, 8, 2)
    assert not kernels.available(config.n_fields, 8, 2)
    assert not kernels.supports(8, 128, 2)  # wider than a thread's stack holds the sums for
    model = trained_looking(config)
    with torch.inference_mode():
        out = model.target_tower(inputs(config, 10))
    assert out.shape == (10, 8) and torch.isfinite(out).all()


def test_gradients_take_the_training_layer_never_the_inference_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the inference kernel has no backward; autograd must not reach it")

    real, taken = kernels.attention_layer, []

    def counted(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
        taken.append(args)
        return real(*args)

    monkeypatch.setattr(kernels, "field_attention", refuse)
    monkeypatch.setattr(kernels, "attention_layer", counted)
    config = make((25, 22, 10, 16, 51))
    model = trained_looking(config)
    x = inputs(config, 20)
    model.target_tower(x).sum().backward()  # eval mode, gradients on
    model.train()
    model.target_tower(x).sum().backward()
    assert len(taken) == 4  # two layers, two passes


def test_without_a_compiler_the_towers_use_pytorch(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(kernels, "_libraries", {})
    monkeypatch.setattr(kernels, "_compiler", lambda: None)
    config = make((25, 22, 10, 16, 51))
    with caplog.at_level(logging.WARNING, logger="matching.ml.kernels"):
        assert not kernels.available(config.n_fields, config.token_dim, config.heads)
    assert "no C++ compiler" in caplog.text
    model = trained_looking(config)
    with torch.inference_mode():
        out = model.target_tower(inputs(config, 10))
    assert torch.isfinite(out).all()


def test_the_library_is_built_once_per_shape_into_the_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernels, "_libraries", {})
    assert kernels.library(8, 16, 2) is not None
    assert kernels.library(8, 16, 2) is kernels.library(8, 16, 2)
    assert kernels.library(6, 16, 2) is not None
    built = sorted(p.name for p in (tmp_path / "socialmatch").iterdir())
    assert len(built) == 2 and all(name.endswith(".so") for name in built)  # no temporary file left


def test_builds_not_loaded_for_a_month_are_removed_when_another_is_built(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernels, "_libraries", {})
    cache = tmp_path / "socialmatch"
    cache.mkdir()
    stale, recent, other = cache / "kernels-0000000000000000.so", cache / "kernels-1111111111111111.so", cache / "notes.txt"
    for path in (stale, recent, other):
        path.write_bytes(b"")
    month_ago = time.time() - (kernels.STALE_DAYS + 1) * 86_400
    for path in (stale, other):
        os.utime(path, (month_ago, month_ago))
    assert kernels.library(8, 16, 2) is not None  # builds, then prunes
    left = {p.name for p in cache.iterdir()}
    assert stale.name not in left and {recent.name, other.name} <= left and len(left) == 3
    # Loading an existing build marks it used: a month later it is still there.
    built = next(p for p in cache.iterdir() if p.name not in (recent.name, other.name))
    os.utime(built, (month_ago, month_ago))
    monkeypatch.setattr(kernels, "_libraries", {})
    assert kernels.library(8, 16, 2) is not None
    assert built not in kernels._prune(cache)
    assert built.exists() and time.time() - built.stat().st_mtime < 60


def test_inference_path_agrees_with_the_autograd_path() -> None:
    """Under no_grad an eval tower takes the kernel, the fields written in place and the DNN with
    BatchNorm folded in; with gradients on, the training code. Same embeddings either way."""
    config = make((25, 22, 10, 16, 51))
    model = trained_looking(config)
    tower = model.target_tower
    with torch.no_grad():  # running statistics far from (0, 1), as after training
        for layer in tower.dnn:
            if isinstance(layer, torch.nn.BatchNorm1d):
                layer.running_mean.normal_(0.0, 2.0)
                layer.running_var.uniform_(0.2, 5.0)
    x = inputs(config, 1500)
    with torch.inference_mode():
        fast = tower(x)
        with kernels.disabled():
            without_kernel = tower(x)
    with torch.enable_grad():
        reference = tower(x).detach()
    assert torch.allclose(fast, reference, atol=2e-5), (fast - reference).abs().max()
    assert torch.allclose(without_kernel, reference, atol=2e-5)


def test_a_quantised_tower_keeps_pytorchs_operators() -> None:
    from matching.ml.lifecycle import quantise

    config = make((25, 22, 10, 16, 51))
    model = trained_looking(config)
    x = inputs(config, 40)
    with torch.inference_mode():
        float_out = model.target_tower(x)
        int8_out = quantise(model).target_tower(x)
    assert torch.isfinite(int8_out).all()
    assert torch.nn.functional.cosine_similarity(float_out, int8_out).min() > 0.9


def _reference_core(qkv: torch.Tensor, pw: torch.Tensor | None, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    """The attention core written plainly in PyTorch, with the kernel's mask layout (by key, then query)."""
    f, width = qkv.shape[1], qkv.shape[2] // 3
    d = width // heads
    q, k, v = qkv.split(width, dim=-1)
    out = []
    for h in range(heads):
        qh, kh, vh = (t[..., h * d:(h + 1) * d] for t in (q, k, v))
        w = pw[h] if pw is not None else torch.ones(d)
        a = torch.softmax((qh * w) @ kh.transpose(1, 2) * d**-0.5, dim=-1)  # (B, Fq, Fk)
        if mask is not None:
            a = a * mask[:, h, :, :f].transpose(1, 2)
        o = a @ vh
        out.append(qh * o if pw is not None else o)
    return torch.cat(out, dim=-1)


@pytest.mark.parametrize("productive", [False, True])
@pytest.mark.parametrize(
    ("f", "width", "heads", "dropout", "b"),
    # 1,100 people: two OpenMP threads (``kernels.MIN_ROWS_PER_THREAD``), an odd share each,
    # so the per-thread parameter sums are added up as training adds them.
    [(8, 16, 2, 0.0, 300), (8, 16, 2, 0.3, 300), (6, 16, 2, 0.3, 300), (10, 32, 4, 0.1, 300), (8, 16, 2, 0.1, 1100)],
)
def test_layer_gradients_match_autograd(f: int, width: int, heads: int, dropout: float, b: int, productive: bool) -> None:
    """The training layer, ``norm(attention(x) + x)``: output, weights and the gradients of the
    input and of every parameter (projections, product weights, LayerNorm) against plain PyTorch."""
    from matching.ml.model import FieldSelfAttention, ProductiveAttention

    torch.manual_seed(2)  # the modules' own initialisation: the same whatever ran before
    g = torch.Generator().manual_seed(2)
    layer = (ProductiveAttention if productive else FieldSelfAttention)(width, heads, dropout=dropout)
    norm = torch.nn.LayerNorm(width)
    params = [*layer.parameters(), *norm.parameters()]
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    x = torch.randn(b, f, width, generator=g, requires_grad=True)
    mask = None
    if dropout:
        mask = (torch.rand(b, heads, f, kernels.padded(f), generator=g) >= dropout).float() / (1 - dropout)
    upstream = torch.randn(b, f, width, generator=g)
    pw = layer.product_weights if productive else None

    def run(compiled: bool) -> tuple[torch.Tensor, ...]:
        x.grad = None
        for p in params:
            p.grad = None
        if compiled:
            y, weights = kernels.attention_layer(x, layer.qkv, pw, layer.out, norm, heads, mask)
        else:
            qkv = layer.qkv(x)
            y = norm(layer.out(_reference_core(qkv, None if pw is None else pw.view(heads, -1), heads, mask)) + x)
            weights = None
        (y * upstream).sum().backward()
        return (y, weights, x.grad, *(p.grad for p in params))

    got, want = run(True), run(False)
    assert torch.allclose(got[0], want[0], atol=1e-5), (got[0] - want[0]).abs().max()
    # The weights it reports are the softmax before dropout, (B, H, queries, keys).
    with torch.no_grad():
        q, k, _ = layer.qkv(x).split(width, dim=-1)
        d = width // heads
        expected = torch.stack([
            torch.softmax((q[..., h * d:(h + 1) * d] * (pw.view(heads, -1)[h] if pw is not None else 1.0))
                          @ k[..., h * d:(h + 1) * d].transpose(1, 2) * d**-0.5, dim=-1)
            for h in range(heads)
        ], dim=1)
    assert got[1].shape == (b, heads, f, f) and torch.allclose(got[1], expected, atol=1e-5)
    for a, w in zip(got[2:], want[2:], strict=True):
        # float32 sums over b x f tokens in another order: errors grow with the gradient's scale
        scale = max(1.0, float(w.abs().max()))
        assert torch.allclose(a, w, atol=1e-5 * scale, rtol=1e-4), ((a - w).abs().max(), scale)


_FEWER_THREADS = """
import torch
from matching.ml import kernels
from matching.ml.model import ProductiveAttention

torch.set_num_threads(2)
if kernels._threads(1100) < 2:
    print("SKIP")
    raise SystemExit
empty = torch.empty
def poisoned(*shape, **options):  # whatever a buffer held before, made visible
    t = empty(*shape, **options)
    return t.fill_(float("nan")) if t.is_floating_point() else t
kernels.torch.empty = poisoned
layer, norm = ProductiveAttention(16, 2), torch.nn.LayerNorm(16)
x = torch.randn(1100, 8, 16, requires_grad=True)
y, _ = kernels.attention_layer(x, layer.qkv, layer.product_weights, layer.out, norm, 2, None)
y.sum().backward()
grads = [p.grad for p in (*layer.parameters(), *norm.parameters())]
print("FINITE" if all(bool(torch.isfinite(g).all()) for g in grads) else "NAN")
"""


def test_layer_gradients_hold_when_openmp_starts_fewer_threads_than_asked() -> None:
    """OMP_THREAD_LIMIT=1 while the layer asks for two threads: the row of parameter sums the
    second thread never wrote must add nothing (it once added whatever the buffer held)."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    done = subprocess.run([sys.executable, "-c", _FEWER_THREADS], env=env, cwd=settings.BASE_DIR,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if done.stdout.strip() == "SKIP":
        pytest.skip("PyTorch runs one thread here: the layer asks for one")
    assert done.stdout.strip().endswith("FINITE"), done.stdout + done.stderr[-2000:]


@pytest.mark.parametrize(("shared", "b"), [(False, 700), (True, 700), (False, 1100)])
def test_training_step_gradients_match_pytorch(shared: bool, b: int) -> None:
    """Both towers in train mode without dropout, the in-batch loss over their embeddings: every
    parameter's gradient the same on both paths (towers sharing their weights too, where each
    parameter takes two gradients; 1,100 people run the kernels on two threads)."""
    from matching.ml.train import listwise_loss

    config = make((25, 22, 10, 16, 51), dropout=0.0, shared_towers=shared)
    model = trained_looking(config).train()
    seeds, targets = inputs(config, b, seed=1), inputs(config, b, seed=2)
    log_q = torch.randn(b, generator=torch.Generator().manual_seed(3))
    towers = torch.nn.ModuleList([model.seed_tower, model.target_tower])

    def grads() -> dict[str, torch.Tensor]:
        towers.zero_grad()
        listwise_loss(model.seed_embed(seeds), model.target_embed(targets), log_q, config.temperature).backward()
        return {name: p.grad.clone() for name, p in towers.named_parameters() if p.grad is not None}

    compiled = grads()
    with kernels.disabled():
        plain = grads()
    assert compiled.keys() == plain.keys()
    for name in plain:
        assert torch.allclose(compiled[name], plain[name], atol=1e-4, rtol=1e-3), name


def test_training_step_gradients_match_pytorch_with_dropout(monkeypatch) -> None:
    """The same comparison with every dropout on. The two paths draw their attention masks in
    different layouts (the kernels one (B, H, keys, queries padded) per layer, PyTorch one (B,
    queries, keys) per head), so here both read one fixed mask per layer through their own
    layout; the DNN layers' masks come from the seeded stream on both paths, as in
    ``test_batch_norm_relu_dropout_matches_pytorch``."""
    from matching.ml.model import Dropout
    from matching.ml.train import listwise_loss

    p, b = 0.2, 300
    config = make((25, 22, 10, 16, 51), dropout=p)
    f, heads = config.n_fields, config.heads
    model = trained_looking(config).train()
    seeds, targets = inputs(config, b, seed=1), inputs(config, b, seed=2)
    log_q = torch.randn(b, generator=torch.Generator().manual_seed(3))
    towers = torch.nn.ModuleList([model.seed_tower, model.target_tower])
    g = torch.Generator().manual_seed(4)
    masks = [(torch.rand(b, heads, f, f, generator=g) >= p).float() / (1 - p) for _ in range(4)]  # (B, H, q, k)
    real = kernels.dropout_multipliers
    drawn: list[tuple[int, ...]] = []

    def multipliers(shape: tuple[int, ...], rate: float) -> torch.Tensor | None:
        if len(shape) == 4:  # the kernels' layer: (B, H, keys, queries padded)
            out = torch.zeros(shape)
            out[..., :f] = masks[len(drawn)].transpose(2, 3)
            drawn.append(shape)
            return out
        if len(shape) == 3:  # PyTorch's head: (B, queries, keys)
            layer, head = divmod(len(drawn), heads)
            drawn.append(shape)
            return masks[layer][:, head]
        before = kernels._enabled
        kernels._enabled = True  # a DNN layer's Dropout: the seeded multipliers, as the kernel's
        try:
            return real(shape, rate)
        finally:
            kernels._enabled = before

    monkeypatch.setattr(kernels, "dropout_multipliers", multipliers)

    def grads() -> dict[str, torch.Tensor]:
        drawn.clear()
        towers.zero_grad()
        torch.manual_seed(9)
        listwise_loss(model.seed_embed(seeds), model.target_embed(targets), log_q, config.temperature).backward()
        return {name: q.grad.clone() for name, q in towers.named_parameters() if q.grad is not None}

    compiled = grads()
    assert [len(shape) for shape in drawn] == [4] * 4
    with kernels.disabled():
        plain = grads()
    assert [len(shape) for shape in drawn] == [3] * (4 * heads)
    assert compiled.keys() == plain.keys()
    for name in plain:
        assert torch.allclose(compiled[name], plain[name], atol=1e-4, rtol=1e-3), name
    # and the masks mattered: without dropout the gradients differ
    for module in model.modules():
        if isinstance(module, Dropout):
            module.p = 0.0
    unmasked = grads()
    assert not torch.allclose(unmasked["0.dnn.0.weight"], plain["0.dnn.0.weight"], atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(("rows", "cols"), [(1024, 1024), (7, 13), (300, 8), (1, 3)])
def test_softmax_rows_match_pytorch(rows: int, cols: int) -> None:
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, cols, generator=g) * 8
    x[0, 0] = -200.0  # far under the row's maximum: exp underflows to 0, not to garbage
    expected, lse = torch.softmax(x, dim=1), torch.logsumexp(x, dim=1)
    got = x.clone()
    log_total = kernels.softmax_rows_(got)
    assert log_total is not None
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(log_total, lse, rtol=1e-6, atol=1e-5)
    assert kernels.softmax_rows_(torch.randn(4, 6)[:, ::2]) is None  # not contiguous: left to PyTorch
    with kernels.disabled():
        assert kernels.softmax_rows_(x) is None


@pytest.mark.parametrize("log_q", [True, False])
def test_in_batch_loss_and_its_gradients_are_the_same_with_the_softmax_kernel(log_q: bool) -> None:
    from matching.ml.train import listwise_loss

    g = torch.Generator().manual_seed(2)
    seed = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=1).requires_grad_()
    target = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=1).requires_grad_()
    shift = torch.randn(300, generator=g) if log_q else None
    results = []
    for compiled in (True, False):
        with contextlib.nullcontext() if compiled else kernels.disabled():
            loss = listwise_loss(seed, target, shift, 0.05)
            results.append((loss, *torch.autograd.grad(loss, (seed, target))))
    reference = torch.nn.functional.cross_entropy(
        seed @ target.T / 0.05 - (shift if log_q else torch.zeros(300)), torch.arange(300))
    torch.testing.assert_close(results[0][0], reference, rtol=1e-5, atol=1e-5)
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_dropout_multipliers_keep_the_asked_share_reproducibly() -> None:
    torch.manual_seed(5)
    first = kernels.dropout_multipliers((999, 1001), 0.3)  # an odd count: the last element too
    assert first is not None
    assert first.unique().tolist() == [0.0, pytest.approx(1 / 0.7)]
    assert abs(float((first == 0).float().mean()) - 0.3) < 0.003
    assert abs(float(first.mean()) - 1.0) < 0.005  # unbiased, as nn.Dropout
    torch.manual_seed(5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = kernels.dropout_multipliers((999, 1001), 0.3)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first, again)  # the seed decides, not the number of threads
    assert not torch.equal(first, kernels.dropout_multipliers((999, 1001), 0.3))
    # neighbouring elements are independent: pairs come from one hash, so check both lanes
    kept = (first.flatten() > 0).float()
    both = float((kept[0::2][:499_000] * kept[1::2][:499_000]).mean())
    assert abs(both - 0.49) < 0.004


def test_dropout_uses_the_multipliers_and_falls_back_without_them() -> None:
    from matching.ml.model import Dropout

    layer = Dropout(0.25).train()
    x = torch.ones(400, 300)
    torch.manual_seed(2)
    compiled = layer(x)
    with kernels.disabled():
        torch.manual_seed(2)
        plain = layer(x)
    for out in (compiled, plain):
        assert abs(float((out == 0).float().mean()) - 0.25) < 0.01
        assert out.unique().tolist() == [0.0, pytest.approx(1 / 0.75)]
    assert torch.equal(layer.eval()(x), x)


def _bags_matrix(seed: int = 0):
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    dense = (rng.random((300, 200)) < 0.08) * rng.random((300, 200))
    matrix = sp.csr_matrix(dense.astype(np.float32))
    members = (np.arange(matrix.nnz) * 7 % 97).astype(np.int32)  # each stored member's embedding row
    return matrix, members, rng


def test_bag_gather_without_dropout_matches_numpy() -> None:
    import numpy as np

    from matching.ml.inputs import _bag

    matrix, members, rng = _bags_matrix()
    rows = rng.integers(0, 300, 500)
    hide = np.where(rng.random(500) < 0.5, matrix.indices[matrix.indptr[rows]] if matrix.nnz else -1, -1)
    hide = np.where(np.diff(matrix.indptr)[rows] > 0, hide, -1)
    for weights, hidden in ((True, None), (False, hide)):
        got = _bag(matrix, members, rows, hidden, 0.0, None, weights=weights, renormalise=False)
        with kernels.disabled():
            want = _bag(matrix, members, rows, hidden, 0.0, None, weights=weights, renormalise=False)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_bag_gather_drops_the_asked_share_hides_and_renormalises() -> None:
    import numpy as np

    from matching.ml.inputs import _bag

    matrix, members, rng = _bags_matrix(1)
    rows = np.repeat(np.arange(300), 20)
    hide = np.full(len(rows), -1)
    index, offsets, weight = _bag(matrix, members, rows, hide, 0.25, rng, weights=True, renormalise=True)
    stored = int(np.diff(matrix.indptr)[rows].sum())
    assert abs(len(index) / stored - 0.75) < 0.01
    counts = np.diff(np.append(offsets, len(index)))
    owner = np.repeat(np.arange(len(rows)), counts)
    sums = np.bincount(owner, weights=weight, minlength=len(rows))
    assert np.allclose(sums[counts > 0], 1.0, atol=1e-5)
    # the hidden member never appears in its row's bag
    hide = matrix.indices[matrix.indptr[rows]].astype(np.int64)
    hide[np.diff(matrix.indptr)[rows] == 0] = -1
    index, offsets, _ = _bag(matrix, np.arange(matrix.nnz, dtype=np.int32), rows, hide, 0.25, rng, weights=False, renormalise=False)
    counts = np.diff(np.append(offsets, len(index)))
    for i in np.flatnonzero(hide >= 0)[:500]:
        positions = index[offsets[i]:offsets[i] + counts[i]]
        assert hide[i] not in matrix.indices[positions]


@pytest.mark.parametrize(("rows", "width", "p"), [(700, 32, 0.0), (700, 256, 0.2), (3, 8, 0.5), (1100, 128, 0.2)])
def test_batch_norm_relu_dropout_matches_pytorch(rows: int, width: int, p: float) -> None:
    """The DNN layer's compiled activation: output, every gradient, the same dropout mask as
    ``Dropout`` draws after the same seed, and the running statistics PyTorch would keep."""
    from matching.ml.model import Dropout

    g = torch.Generator().manual_seed(1)
    z = torch.randn(rows, width, generator=g) * 3 + 1
    upstream = torch.randn(rows, width, generator=g)
    norms = [torch.nn.BatchNorm1d(width), torch.nn.BatchNorm1d(width)]
    with torch.no_grad():
        norms[0].weight.uniform_(-1, 2, generator=g)
        norms[0].bias.uniform_(-1, 1, generator=g)
    norms[1].load_state_dict(norms[0].state_dict())
    results = []
    for norm, compiled in zip(norms, (True, False), strict=True):
        norm.train()
        x = z.clone().requires_grad_()
        torch.manual_seed(9)
        if compiled:
            y = kernels.batch_norm_relu_dropout(x, norm, p)
            assert y is not None
        else:
            y = Dropout(p)(torch.relu(norm(x)))
        (y * upstream).sum().backward()
        results.append((y, x.grad, norm.weight.grad, norm.bias.grad, norm.running_mean, norm.running_var))
    for got, want in zip(*results, strict=True):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    assert int(norms[0].num_batches_tracked) == 1
    if p:  # the mask: dropped exactly where PyTorch's path dropped
        assert torch.equal(results[0][0] == 0, results[1][0] == 0)


def test_batch_norm_relu_dropout_leaves_what_it_does_not_take_to_pytorch() -> None:
    norm = torch.nn.BatchNorm1d(12).train()
    assert kernels.batch_norm_relu_dropout(torch.randn(10, 12), norm, 0.1) is None  # width not a multiple of 8
    norm = torch.nn.BatchNorm1d(16).train()
    assert kernels.batch_norm_relu_dropout(torch.randn(1, 16), norm, 0.1) is None  # one row: PyTorch raises
    assert kernels.batch_norm_relu_dropout(torch.randn(10, 16), norm.eval(), 0.1) is None  # running statistics
    with kernels.disabled():
        assert kernels.batch_norm_relu_dropout(torch.randn(10, 16), norm.train(), 0.1) is None
