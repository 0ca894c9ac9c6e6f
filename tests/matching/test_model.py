"""The RALM model on tiny deterministic tensors: shapes, gradients, attention, losses."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from matching.ml import kernels
from matching.ml.lookalike import kmeans
from matching.ml.model import (
    RALM,
    FieldSelfAttention,
    ModelConfig,
    ProductiveAttention,
    SeedSetAttention,
    TowerInput,
    _bag,
    l2_normalize,
)
from matching.ml.train import (
    FlatAdam, LazyAdam, TrainConfig, listwise_loss, logq_logits, pointwise_loss, tower_optimizer, triplet_loss,
)

GROUPS = (3, 4, 2)


def config(**overrides: object) -> ModelConfig:
    return ModelConfig(group_dims=GROUPS, cell_buckets=16, token_dim=8, heads=2, dnn_hidden=(16, 32, 16),
                       embedding_dim=8, dropout=0.0, pair_dim=3, rank_hidden=(8,), **overrides)


def batch(b: int = 5, seed: int = 0) -> TowerInput:
    g = torch.Generator().manual_seed(seed)
    return TowerInput(dense=torch.rand(b, sum(GROUPS), generator=g), cells=torch.randint(0, 16, (b,), generator=g))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_towers_return_unit_embeddings_and_pass_gradients() -> None:
    model = RALM(config())
    x = batch()
    seed, target = model.seed_embed(x), model.target_embed(x)
    assert seed.shape == target.shape == (5, 8)
    assert torch.allclose(seed.norm(dim=1), torch.ones(5), atol=1e-5)
    loss = listwise_loss(seed, target, None, 0.1)
    loss.backward()
    grads = [p.grad for p in model.seed_tower.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_towers_have_separate_weights_unless_shared() -> None:
    assert RALM(config()).seed_tower is not RALM(config()).target_tower
    shared = RALM(config(shared_towers=True))
    assert shared.seed_tower is shared.target_tower


def test_attention_weights_differ_across_inputs() -> None:
    model = RALM(config()).eval()
    tower = model.seed_tower
    tower(batch(2, seed=1))
    self_w, prod_w = tower.self_attention.last_weights, tower.productive.last_weights
    assert self_w.shape == (2, 2, 4, 4)  # batch, heads, fields (3 groups + cell), fields
    assert not torch.allclose(self_w[0], self_w[1])
    assert not torch.allclose(prod_w[0], prod_w[1])
    # Attention over several fields is not the trivial length-1 softmax of the seed code.
    assert (self_w < 0.999).all()


@pytest.mark.parametrize("switch", ["use_self_attention", "use_productive_attention"])
def test_removing_either_attention_changes_the_output(switch: str) -> None:
    full = RALM(config()).eval()
    ablated = RALM(config(**{switch: False})).eval()
    ablated.load_state_dict(full.state_dict())
    x = batch()
    assert not torch.allclose(full.seed_embed(x), ablated.seed_embed(x), atol=1e-4)


def test_productive_attention_scores_follow_the_formula() -> None:
    layer = ProductiveAttention(dim=4, heads=1)
    x = torch.rand(1, 3, 4)
    layer(x)
    q, k, _ = layer.qkv(x).view(1, 3, 3, 1, 4).permute(2, 0, 3, 1, 4)
    w = layer.product_weights
    expected = torch.softmax((q * w) @ k.transpose(-1, -2) / 2.0, dim=-1)
    manual = torch.softmax(torch.einsum("bhid,bhjd,hd->bhij", q, k, w[:, 0]) / 2.0, dim=-1)
    assert torch.allclose(layer.last_weights, expected, atol=1e-6)
    assert torch.allclose(expected, manual, atol=1e-6)


def _reference_attention(layer: torch.nn.Module, x: torch.Tensor, productive: bool) -> torch.Tensor:
    """The layer's maths in plain autograd, head by head."""
    b, f, dim = x.shape
    h, d = layer.heads, dim // layer.heads
    q, k, v = layer.qkv(x).view(b, f, 3, h, d).permute(2, 0, 3, 1, 4)  # each (B, H, F, d)
    w = layer.product_weights.unsqueeze(0) if productive else torch.ones(1, h, 1, d)
    weights = torch.softmax((q * w) @ k.transpose(-1, -2) / d**0.5, dim=-1)
    mixed = weights @ v
    if productive:
        mixed = q * mixed
    return layer.out(mixed.permute(0, 2, 1, 3).reshape(b, f, dim))


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("layer_class", [FieldSelfAttention, ProductiveAttention])
def test_attention_layers_match_the_plain_maths_forward_and_backward(layer_class: type, heads: int) -> None:
    """Training lays each head out contiguously, inference slices them in place: the same maths."""
    layer = layer_class(dim=8, heads=heads)
    if layer_class is ProductiveAttention:
        with torch.no_grad():
            layer.product_weights.uniform_(0.5, 1.5)
    x = torch.rand(6, 5, 8, requires_grad=True)
    y = layer(x)
    expected = _reference_attention(layer, x, layer_class is ProductiveAttention)
    assert torch.allclose(y, expected, atol=1e-6)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *layer.parameters()], g)
    want = torch.autograd.grad(expected, [x, *layer.parameters()], g, allow_unused=True)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b if b is not None else torch.zeros_like(a), atol=1e-5)
    assert layer.last_weights.shape == (6, heads, 5, 5)
    with torch.inference_mode():
        assert torch.allclose(layer(x.detach()), expected.detach(), atol=1e-6)


@pytest.mark.parametrize("width", [4, 16])  # 16: the compiled backward's whole-vector rows, as the towers use
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "scipy"])
@pytest.mark.parametrize(("mode", "weighted"), [("sum", True), ("sum", False), ("mean", False)])
def test_bag_gradients_equal_embedding_bags(mode: str, weighted: bool, compiled: bool, width: int) -> None:
    """The id bags' hand-written backward (compiled, or a scipy sparse product) against EmbeddingBag's own."""
    weight = torch.randn(20, width, requires_grad=True)
    reference = weight.detach().clone().requires_grad_()
    counts = torch.tensor([3, 0, 5, 1, 7, 0])  # empty bags too, the last one included
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
    index = torch.tensor([2, 2, 7, 0, 1, 1, 1, 19, 5, 3, 3, 4, 2, 2, 8, 9])  # repeated members too
    per_sample = torch.rand(len(index)) if weighted else None
    with contextlib.nullcontext() if compiled else kernels.disabled():
        out = _bag(weight, index, offsets, per_sample, mode)
    expected = F.embedding_bag(index, reference, offsets, mode=mode, per_sample_weights=per_sample)
    g = torch.randn_like(out)
    with contextlib.nullcontext() if compiled else kernels.disabled():
        out.backward(g)
    expected.backward(g)
    assert torch.allclose(out, expected)
    assert torch.allclose(weight.grad, reference.grad, atol=1e-6)
    # The sparse gradient of a large table: the touched rows, each once and in order, the same values.
    sparse = weight.detach().clone().requires_grad_()
    with contextlib.nullcontext() if compiled else kernels.disabled():
        _bag(sparse, index, offsets, per_sample, mode, sparse=True).backward(g)
    assert sparse.grad.is_sparse
    assert torch.equal(sparse.grad._indices()[0], torch.unique(index))
    assert torch.allclose(sparse.grad.to_dense(), reference.grad, atol=1e-6)


def test_pointwise_loss_on_a_hand_made_batch() -> None:
    seed = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([1.0, 0.0])
    # logits: 1/0.5 = 2 for the positive, 0 for the negative
    expected = (np.log1p(np.exp(-2.0)) + np.log(2.0)) / 2
    assert pointwise_loss(seed, target, labels, 0.5).item() == pytest.approx(expected, rel=1e-5)


def test_triplet_losses_on_a_hand_made_batch() -> None:
    seed = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[0.6, 0.8]])  # cosine 0.6
    neg = torch.tensor([[0.8, 0.6]])  # cosine 0.8
    assert triplet_loss(seed, pos, neg, kind="hinge", margin=0.3, temperature=1.0).item() == pytest.approx(0.5)
    assert triplet_loss(seed, pos, neg, kind="logistic", margin=0.3, temperature=0.1).item() == pytest.approx(
        float(np.log1p(np.exp(2.0))), rel=1e-5
    )


def test_logq_correction_subtracts_log_sampling_probability() -> None:
    seed = torch.eye(3)
    target = torch.eye(3)
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    plain = logq_logits(seed, target, None, 1.0)
    corrected = logq_logits(seed, target, log_q, 1.0)
    assert torch.allclose(corrected, plain - log_q.unsqueeze(0))
    # A popular target loses less than a rare one: its logit rises by -log q = log 2 vs log 4.
    assert corrected[1, 0] - plain[1, 0] == pytest.approx(np.log(2.0))
    assert listwise_loss(seed, target, log_q, 1.0).item() != pytest.approx(listwise_loss(seed, target, None, 1.0).item())


def test_kmeans_seed_summary_agrees_with_exact_attention() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 8))
    seeds = np.repeat(centres, 50, axis=0) + rng.normal(scale=0.01, size=(1000, 8))
    seeds /= np.linalg.norm(seeds, axis=1, keepdims=True)
    targets = torch.from_numpy(rng.normal(size=(30, 8)).astype(np.float32))
    attention = SeedSetAttention(8)
    with torch.no_grad():
        attention.u_global.normal_()
        exact = attention(torch.from_numpy(seeds.astype(np.float32)), targets)
        clusters = kmeans(seeds, k=20)
        summarised = attention(torch.from_numpy(clusters.centroids), targets, torch.from_numpy(clusters.counts))
    assert len(clusters.counts) == 20 and clusters.counts.sum() == 1000
    assert torch.allclose(exact, summarised, atol=0.02)


def test_lookalike_prefers_targets_like_the_seeds() -> None:
    attention = SeedSetAttention(2)
    seeds = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    targets = torch.tensor([[1.0, 0.05], [0.0, 1.0]])
    scores = attention(seeds, targets)
    assert scores[0] > scores[1]


def test_ranking_head_scores_each_pair() -> None:
    model = RALM(config())
    seed, target = model.seed_embed(batch()), model.target_embed(batch(seed=3))
    logits = model.rank(seed, target, torch.rand(5, 3))
    assert logits.shape == (5,)


def test_flat_adam_steps_as_adam_over_the_separate_parameters() -> None:
    """Clipping and Adam over the flat buffer give the per-parameter results; zero_grad keeps the
    gradients in the buffer even when asked to free them; release gives back separate storages.
    (One step is compared: later steps amplify rounding in the Linear biases before BatchNorm,
    whose gradients are zero up to rounding and which Adam scales to full steps either way.)"""
    twins = [RALM(config()), RALM(config())]
    twins[1].load_state_dict(twins[0].state_dict())
    towers = [[p for t in (m.seed_tower, m.target_tower) for p in t.parameters()] for m in twins]
    flat = FlatAdam(towers[0], lr=0.01, weight_decay=1e-3)
    plain = torch.optim.Adam(towers[1], lr=0.01, weight_decay=1e-3)
    for model in twins:
        model.train()
        (model.seed_embed(batch(8)) - model.target_embed(batch(8, seed=1))).pow(2).sum().backward()
    flat.clip_grad_norm_(0.5)
    torch.nn.utils.clip_grad_norm_(towers[1], 0.5)
    flat.step()
    plain.step()
    for a, b in zip(towers[0], towers[1], strict=True):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    storage = towers[0][0].untyped_storage().data_ptr()
    assert all(p.untyped_storage().data_ptr() == storage for p in towers[0])
    flat.zero_grad(set_to_none=True)
    assert all(p.grad is not None and not p.grad.any() for p in towers[0])
    towers[0][0].grad = None  # whoever freed a gradient: the next zero_grad puts it back in the buffer
    flat.zero_grad()
    assert towers[0][0].grad is not None and towers[0][0].grad.untyped_storage().data_ptr() == flat.flat.grad.untyped_storage().data_ptr()
    before = [p.detach().clone() for p in towers[0]]
    flat.release()
    assert len({p.untyped_storage().data_ptr() for p in towers[0]}) == len(towers[0])
    assert all(p.grad is None for p in towers[0])
    assert all(torch.equal(p, b) for p, b in zip(towers[0], before, strict=True))


def _sparse_grad(table: torch.nn.Parameter, rows: torch.Tensor, values: torch.Tensor) -> None:
    table.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, table.shape, check_invariants=True)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pytorch"])
def test_lazy_adam_is_adam_on_the_rows_every_step_touches_and_leaves_the_others(compiled: bool) -> None:
    g = torch.Generator().manual_seed(4)
    start = torch.randn(6, 4, generator=g)
    lazy_table, dense_table = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    lazy = LazyAdam([lazy_table], lr=0.05, weight_decay=1e-2)
    dense = torch.optim.Adam([dense_table], lr=0.05, weight_decay=1e-2)
    touched = torch.tensor([0, 2, 3])  # rows 1, 4 and 5 never appear
    for _ in range(4):
        grad = torch.randn(3, 4, generator=g)
        _sparse_grad(lazy_table, touched, grad)
        dense_table.grad = torch.zeros(6, 4).index_copy_(0, touched, grad)
        with contextlib.nullcontext() if compiled else kernels.disabled():
            lazy.step()
        dense.step()
        lazy.zero_grad()
    # On the touched rows Adam itself (weight decay included); the others never moved.
    assert torch.allclose(lazy_table[touched], dense_table[touched], atol=1e-6), (lazy_table - dense_table).abs().max()
    untouched = torch.tensor([1, 4, 5])
    assert torch.equal(lazy_table[untouched], start[untouched])
    exp_avg, exp_avg_sq = lazy.state[lazy_table]
    assert not exp_avg[untouched].any() and not exp_avg_sq[untouched].any()
    assert lazy_table.grad is None


def test_lazy_adam_sums_a_row_that_appears_twice_before_stepping() -> None:
    """Accumulated gradients (two backwards before a step) list a row twice: summed, then stepped."""
    table = torch.nn.Parameter(torch.zeros(4, 2))
    twice = torch.sparse_coo_tensor(torch.tensor([[2, 1, 2]]), torch.tensor([[1.0, 1.0], [2.0, 2.0], [1.0, 1.0]]), (4, 2),
                                    check_invariants=True)
    table.grad = twice
    reference = torch.nn.Parameter(torch.zeros(4, 2))
    reference.grad = twice.to_dense()
    LazyAdam([table], lr=0.1, weight_decay=0.0).step()
    torch.optim.Adam([reference], lr=0.1).step()
    assert torch.allclose(table, reference)


def test_the_tower_optimizer_leaves_gradients_under_the_clipping_norm_as_they_are() -> None:
    model = RALM(config())
    tc = TrainConfig(grad_clip=1e6)
    optimizer = tower_optimizer(model, tc)
    x = batch(6)
    listwise_loss(model.seed_embed(x), model.target_embed(x), None, 0.1).backward()
    assert optimizer.dense.flat.grad is not None
    before, version = optimizer.dense.flat.grad.clone(), optimizer.dense.flat.grad._version
    norm = optimizer.clip_grad_norm_(tc.grad_clip)
    assert 0 < float(norm) < tc.grad_clip
    assert torch.equal(optimizer.dense.flat.grad, before)
    assert optimizer.dense.flat.grad._version == version  # not even multiplied by one


def test_the_tower_optimizer_takes_large_tables_sparse_and_clips_everything_together() -> None:
    model = RALM(config(user_buckets=50, venue_buckets=10))
    tc = TrainConfig(sparse_rows=50, grad_clip=0.01)
    optimizer = tower_optimizer(model, tc)
    for tower in (model.seed_tower, model.target_tower):
        assert tower.fields.friends.sparse and not tower.fields.venues.sparse  # 50 rows sparse, 10 not
    model.train()

    def with_bags(seed: int, friends: list[int]) -> TowerInput:
        x = batch(8, seed=seed)
        x.friend_index, x.friend_offsets = torch.tensor(friends), torch.tensor([0, 2, 2, 3, 3, 4, 5, 5])
        x.venue_index, x.venue_offsets, x.venue_weights = torch.tensor([1, 2]), torch.zeros(8, dtype=torch.long), torch.ones(2)
        return x

    seeds, targets = with_bags(0, [3, 7, 7, 49, 0]), with_bags(1, [1, 1, 2, 3, 4])
    (model.seed_embed(seeds) - model.target_embed(targets)).pow(2).sum().backward()
    table = model.seed_tower.fields.friends.weight
    assert table.grad.is_sparse
    norm = optimizer.clip_grad_norm_(tc.grad_clip)
    everything = [p.grad.to_dense() if p.grad.is_sparse else p.grad
                  for t in (model.seed_tower, model.target_tower) for p in t.parameters() if p.grad is not None]
    assert float(norm) > tc.grad_clip
    assert torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in everything])) == pytest.approx(tc.grad_clip, rel=1e-3)
    before = table.detach().clone()
    optimizer.step()
    moved = (table != before).any(dim=1)
    assert moved.nonzero().flatten().tolist() == [0, 3, 7, 49]  # the rows the bags named, no other
    optimizer.zero_grad()
    assert table.grad is None
    optimizer.release()
    assert not model.seed_tower.fields.friends.sparse


def test_l2_normalize_matches_f_normalize_forward_and_backward() -> None:
    x = torch.randn(7, 5)
    x[3] = 0.0  # a zero row: stays zero, as F.normalize leaves it
    g = torch.randn(7, 5)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = l2_normalize(a), F.normalize(b, dim=-1)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    assert torch.allclose(ya, yb, atol=1e-7)
    assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ya.norm(dim=-1)[[0, 1, 2, 4, 5, 6]], torch.ones(6))
