"""The RALM matching model: two towers over feature fields, seed-set attention, a ranking head.

Reads top to bottom:

1. ``ModelConfig``: every size and switch, with defaults.
2. ``FieldEmbedding``: each feature group (and each id bag) becomes one token, so a tower sees a
   short sequence of fields rather than one flat vector (attention over a single position is the
   identity, the defect of the seed's code).
3. ``ProductiveAttention``: attention whose scores come from element-wise products of queries and
   keys through learned weights, and whose values are products too (formula in its docstring).
4. ``Tower``: fields -> multi-head self-attention -> productive attention -> the seed's DNN block
   (Linear, BatchNorm, ReLU, Dropout; 128-256-128) -> PReLU transform -> 64-d L2-normalised.
   The attention layers come first because they need the field tokens; a DNN over the
   concatenation first would fuse the fields into one vector and leave nothing to attend over.
5. ``RALM``: a seed tower and a target tower (separate weights by default), the look-alike
   seed-set attention of the KDD 2019 paper, and the ranking head that re-ranks retrieved
   candidates with pair features.

Inside a tower, each attention layer with its residual and LayerNorm, and in training each DNN
layer's BatchNorm, ReLU and dropout, run on the compiled kernels of ``matching.ml.kernels`` where
it can build them (at inference, and with compiled backwards in training), and on the PyTorch code
below otherwise (the modules called on their own always take it); tests hold both equal.

The model returns embeddings and scores; ``matching.ml.train`` owns the losses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from matching.ml import gemm, kernels


@dataclass
class ModelConfig:
    # Width of each dense feature group, in schema order (geo, behaviour, social, demographic,
    # preference); set from the FeatureSchema when a model is built.
    group_dims: tuple[int, ...] = (25, 22, 10, 16, 51)
    venue_buckets: int = 0  # rows of the venue-id embedding (0: no venue-bag field)
    user_buckets: int = 0  # rows of the user-id embedding for the friend-bag field (0: none)
    cell_buckets: int = 4096  # hashed geohash-5 cells (~5 km) (0: no cell field)
    token_dim: int = 16  # width of a field token (16 x 2 heads: 200k+ users/s on two cores)
    heads: int = 2  # attention heads
    dnn_hidden: tuple[int, ...] = (128, 256, 128)  # the seed's DNN block
    embedding_dim: int = 64  # output of each tower, L2-normalised
    dropout: float = 0.1
    bag_dropout: float = 0.2  # training-time share of id-bag members dropped
    shared_towers: bool = False  # one set of weights for seed and target towers
    use_self_attention: bool = True
    use_productive_attention: bool = True
    pair_dim: int = 18  # pair features fed to the ranking head (len(PAIR_NAMES))
    rank_hidden: tuple[int, ...] = (128, 64)
    rank_dropout: float = 0.3  # the head sees ~1% positives: it overfits without it
    lookalike_global_weight: float = 0.3  # paper default: 0.3 global + 0.7 local
    temperature: float = 0.1  # softmax temperature of cosine logits

    @property
    def n_fields(self) -> int:
        return len(self.group_dims) + int(self.venue_buckets > 0) + int(self.user_buckets > 0) + int(self.cell_buckets > 0)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> ModelConfig:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known}
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class TowerInput:
    """One batch of users as a tower reads them.

    ``dense``: (B, sum(group_dims)) float32 features. The bags are flat index tensors with
    offsets (``nn.EmbeddingBag`` layout) and per-member weights; ``cells``: (B,) bucket ids.
    """

    dense: torch.Tensor
    venue_index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    venue_offsets: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    venue_weights: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    friend_index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    friend_offsets: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    cells: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


class FieldEmbedding(nn.Module):
    """Each dense group through its own Linear, each id bag through a mean EmbeddingBag."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.dense = nn.ModuleList(nn.Linear(d, config.token_dim) for d in config.group_dims)
        d = config.token_dim
        self.venues = nn.EmbeddingBag(config.venue_buckets, d, mode="sum") if config.venue_buckets else None
        self.friends = nn.EmbeddingBag(config.user_buckets, d, mode="mean") if config.user_buckets else None
        self.cells = nn.Embedding(config.cell_buckets, d) if config.cell_buckets else None
        # Which field a token is: lets attention tell an empty bag from a zero feature group.
        self.field_bias = nn.Parameter(torch.zeros(config.n_fields, d))
        for bag in (self.venues, self.friends, self.cells):
            if bag is not None:
                nn.init.normal_(bag.weight, std=0.05)

    def forward(self, x: TowerInput) -> torch.Tensor:
        if not torch.is_grad_enabled() and all(type(proj) is nn.Linear for proj in self.dense):  # not quantised
            return self._inference(x)
        batch, d = x.dense.shape[0], self.config.token_dim
        # The group Linears as one block-diagonal matmul: the same maps in one call instead of five.
        weight = torch.block_diag(*(proj.weight for proj in self.dense))  # (G*D, sum(group_dims))
        bias = torch.cat([proj.bias for proj in self.dense])
        tokens = [gemm.linear(x.dense, weight, bias).view(batch, len(self.dense), d)]  # (B, G, D)
        if self.venues is not None:
            # Weights are normalised per user by the caller; sum == weighted mean.
            tokens.append(_bag(self.venues.weight, x.venue_index, x.venue_offsets, x.venue_weights, "sum",
                               sparse=self.venues.sparse))
        if self.friends is not None:
            tokens.append(_bag(self.friends.weight, x.friend_index, x.friend_offsets, None, "mean",
                               sparse=self.friends.sparse))
        if self.cells is not None:
            tokens.append(self.cells(x.cells))
        out = torch.cat([t.view(batch, -1, d) for t in tokens], dim=1)  # (B, F, D)
        return out + self.field_bias

    def _inference(self, x: TowerInput) -> torch.Tensor:
        """The same tokens without autograd, each written once into its place: one small product
        per group instead of the block-diagonal one (five times the multiplications, mostly by
        zeros), the field bias folded in, no concatenation."""
        batch, d = x.dense.shape[0], self.config.token_dim
        out = torch.empty(batch, self.config.n_fields, d)  # (B, F, D)
        start, field = 0, 0
        for proj in self.dense:
            stop = start + proj.in_features
            torch.addmm(proj.bias + self.field_bias[field], x.dense[:, start:stop], proj.weight.t(), out=out[:, field])
            start, field = stop, field + 1
        if self.venues is not None:
            bag = _bag(self.venues.weight, x.venue_index, x.venue_offsets, x.venue_weights, "sum")
            torch.add(bag, self.field_bias[field], out=out[:, field])
            field += 1
        if self.friends is not None:
            bag = _bag(self.friends.weight, x.friend_index, x.friend_offsets, None, "mean")
            torch.add(bag, self.field_bias[field], out=out[:, field])
            field += 1
        if self.cells is not None:
            torch.add(self.cells(x.cells), self.field_bias[field], out=out[:, field])
        return out


class _BagFunction(torch.autograd.Function):
    """``F.embedding_bag`` whose backward is one sparse-dense product instead of a sort.

    A batch of bags is a sparse (bags x rows) matrix ``A`` whose row b holds bag b's member
    weights (``per_sample`` for sums, ``1 / size`` for means); the forward is ``A @ weight`` and
    the gradient of the embedding table is ``A^T @ grad``. EmbeddingBag's dense backward sorts
    every member's index to group equal rows (2.6 ms for 1,024 bags of 26 venues); gathering,
    scaling and ``index_add_``-ing the members' gradient rows took 1.3 ms; scipy's transposed CSR
    product takes 0.5 ms, building the matrix from the offsets included (no sort: the CSR of
    ``A`` is the bag layout itself). The compiled ``kernels.bag_backward`` does the same product
    in one pass over the members where it builds. The forward is EmbeddingBag's own, so inference
    is unchanged.

    With ``sparse`` (the table's module has ``sparse`` set: ``train.tower_optimizer`` sets it on
    large tables, such as the friend bags' one row per person), the gradient is a sparse (rows, D)
    tensor of the rows the members touched, each once: a dense gradient of such a table is zeroed,
    filled, added and stepped over in full every step (64 MB a table at 1,000,000 rows), though a
    batch touches tens of thousands of its rows.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, weight: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor,
        per_sample: torch.Tensor | None, mode: str, sparse: bool = False,
    ) -> torch.Tensor:
        ctx.save_for_backward(index, offsets, per_sample)
        ctx.mode, ctx.rows, ctx.sparse = mode, weight.shape[0], sparse
        return F.embedding_bag(index, weight, offsets, mode=mode, per_sample_weights=per_sample)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        index, offsets, per_sample = ctx.saved_tensors
        mean = ctx.mode == "mean"
        if not ctx.sparse:
            return _table_gradient(ctx.rows, index, offsets, per_sample, mean, grad), None, None, None, None, None
        # The touched rows, each once and in order, and their gradient: the same sum as the dense
        # one, over a table of the touched rows (the members renumbered into it).
        touched, position = torch.unique(index, return_inverse=True)
        rows = _table_gradient(len(touched), position, offsets, per_sample, mean, grad)
        sparse = torch.sparse_coo_tensor(touched.unsqueeze(0), rows, (ctx.rows, grad.shape[1]),
                                         check_invariants=False, is_coalesced=True)
        return sparse, None, None, None, None, None


def _table_gradient(
    rows: int, index: torch.Tensor, offsets: torch.Tensor, per_sample: torch.Tensor | None, mean: bool,
    grad: torch.Tensor,
) -> torch.Tensor:
    """The (rows, D) gradient of a table used as bags: by the compiled ``kernels.bag_backward``
    where it builds, else as a scipy sparse product on the CPU, else by scattering the members'
    rows (other devices)."""
    if grad.device.type != "cpu":  # scipy is CPU only: scatter the members' rows instead
        counts = torch.diff(offsets, append=offsets.new_tensor([len(index)]))
        each = grad.index_select(0, torch.repeat_interleave(torch.arange(len(offsets), device=grad.device), counts))
        if mean:
            each = each / counts.clamp_min(1).repeat_interleave(counts).unsqueeze(1).to(grad.dtype)
        elif per_sample is not None:
            each = each * per_sample.to(grad.dtype).unsqueeze(1)
        return grad.new_zeros(rows, grad.shape[1]).index_add_(0, index, each)
    compiled = kernels.bag_backward(rows, index, offsets, per_sample, mean, grad)
    if compiled is not None:
        return compiled
    members = len(index)
    indptr = np.append(offsets.numpy(), members)
    if mean:
        counts = np.diff(indptr)
        values = np.repeat(1.0 / np.maximum(counts, 1), counts).astype(np.float32)
    elif per_sample is not None:
        values = per_sample.numpy().astype(np.float32, copy=False)
    else:
        values = np.ones(members, dtype=np.float32)
    bags = sp.csr_matrix((values, index.numpy(), indptr), shape=(len(offsets), rows))
    grad_weight = bags.T @ grad.detach().float().numpy()  # (rows, D)
    return torch.from_numpy(np.ascontiguousarray(grad_weight, dtype=np.float32))


def _bag(
    weight: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, per_sample: torch.Tensor | None, mode: str,
    *, sparse: bool = False,
) -> torch.Tensor:
    """Bags of embedding rows, (B, D): weighted sums (``mode="sum"``) or means; with ``sparse``,
    the table's gradient is a sparse tensor of the members' rows.

    No gradient flows to ``per_sample``: the inputs fix it.
    """
    if not (torch.is_grad_enabled() and weight.requires_grad):
        return F.embedding_bag(index, weight, offsets, mode=mode, per_sample_weights=per_sample)
    return _BagFunction.apply(weight, index, offsets, per_sample, mode, sparse)


class _Softmax(torch.autograd.Function):
    """``softmax(scale * scores)`` over the last axis, with the backward written out.

    Over eight fields the written-out softmax is ~3x faster on CPU than ``torch.softmax``; as an
    autograd Function its backward is one expression, ``y * (g - sum(g * y))``, instead of
    autograd replaying five recorded operations.
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        e = ((scores - scores.amax(dim=-1, keepdim=True)) * scale).exp_()
        y = e.div_(e.sum(dim=-1, keepdim=True))
        ctx.save_for_backward(y)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        gy = grad * y
        return gy.sub_(y * gy.sum(dim=-1, keepdim=True)).mul_(ctx.scale), None


def _softmax(scores: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``softmax(scale * scores)`` over the last axis (``scale`` > 0)."""
    return _Softmax.apply(scores, scale)


class _Normalize(torch.autograd.Function):
    """``F.normalize(x, dim=-1)`` for (B, E) rows with the backward written out,
    ``dx = (g - y (g . y)) / |x|``: three operators instead of the eight autograd records
    through the norm, its clamp and the division."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        inverse = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(1e-12).reciprocal_()
        y = x * inverse
        ctx.save_for_backward(y, inverse)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        y, inverse = ctx.saved_tensors
        return (grad - y * (grad * y).sum(-1, keepdim=True)).mul_(inverse)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (``F.normalize(x, dim=-1)``)."""
    return _Normalize.apply(x)


class Dropout(nn.Module):
    """``nn.Dropout`` with its mask drawn from 16 random bits per element.

    torch's CPU dropout draws one Mersenne-twister number per element (about 8 ns each here; over
    the two towers' ten dropout layers, a tenth of a training step). Filling int64 words with 64
    random bits and reading them as four 16-bit lanes costs an eighth of that; the compiled
    ``kernels.dropout_multipliers`` (16 bits of a counter-based hash per element, written as the
    multipliers) less again, and is used where it builds. The drop probability is resolved to
    1/65536. Seeded by ``torch.manual_seed`` like ``nn.Dropout``.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be between 0 and 1, got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        on_cpu = x.device.type == "cpu" and x.dtype == torch.float32
        multipliers = kernels.dropout_multipliers(tuple(x.shape), self.p) if on_cpu else None
        if multipliers is not None:
            return x * multipliers
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits random
        keep = bits.view(torch.int16)[:n].view(x.shape) >= round(self.p * 65536) - 32768
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _split_heads(qkv: torch.Tensor, heads: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Projections (B, F, 3 * H * d) -> the queries, keys and values of each head, (B, F, d) each.

    When training, one copy lays each head's block out contiguously: the backward of strided
    slices would zero-fill and add a full-width gradient per slice, and products of permuted
    views copy their operands forward and backward (~20% of an attention layer's training
    time). Without gradients the slices are views that ``bmm`` reads in place, and the copy
    would be the single largest cost of inference.
    """
    b, f, width = qkv.shape
    d = width // (3 * heads)
    if torch.is_grad_enabled() and qkv.requires_grad:
        parts = qkv.view(b, f, 3 * heads, d).permute(2, 0, 1, 3).contiguous().unbind(0)
    else:
        parts = tuple(qkv[..., i * d:(i + 1) * d] for i in range(3 * heads))
    return list(parts[:heads]), list(parts[heads:2 * heads]), list(parts[2 * heads:])


def _dropout_mask(layer: FieldSelfAttention | ProductiveAttention, b: int, f: int) -> torch.Tensor | None:
    """The attention dropout's multipliers as the compiled kernels read them (by key, then query
    padded to a multiple of eight), None when the layer does not drop: the same draw as the
    layer's ``Dropout`` applied to ones, without the ones."""
    if not layer.training or layer.dropout.p == 0:
        return None
    shape = (b, layer.heads, f, kernels.padded(f))
    mask = kernels.dropout_multipliers(shape, layer.dropout.p)
    return mask if mask is not None else layer.dropout(torch.ones(shape))


def _layer_compiled(layer: FieldSelfAttention | ProductiveAttention, x: torch.Tensor, norm: nn.LayerNorm,
                    product_weights: torch.Tensor | None) -> torch.Tensor:
    """``norm(layer(x) + x)`` by the compiled kernels: the inference pass without gradients, the
    training layer (every gradient, dropout) with them."""
    if torch.is_grad_enabled():
        mask = _dropout_mask(layer, x.shape[0], x.shape[1])
        y, weights = kernels.attention_layer(x, layer.qkv, product_weights, layer.out, norm, layer.heads, mask)
    else:
        y, weights = kernels.field_attention(x, layer.qkv, product_weights, layer.out, norm, layer.heads)
    layer._weights = list(weights.unbind(1))
    return y


class FieldSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention across the field tokens, with the weights kept.

    Written out (rather than ``nn.MultiheadAttention``) because with eight tokens the fused
    module's overhead dominates; ``last_weights`` (B, H, F, F) lets tests and the admin inspect
    which fields a person's representation attended to.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError("token width must be divisible by the number of heads")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = Dropout(dropout)
        self._weights: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)  # (B, F, 3D)
        queries, keys, values = _split_heads(qkv, self.heads)  # each H x (B, F, d)
        self._weights, mixed = [], []
        for q, k, v in zip(queries, keys, values, strict=True):
            weights = _softmax(torch.bmm(q, k.transpose(1, 2)), self.head_dim**-0.5)  # (B, F, F)
            self._weights.append(weights.detach())
            mixed.append(torch.bmm(self.dropout(weights), v))  # (B, F, d)
        return self.out(torch.cat(mixed, dim=-1))  # (B, F, D)

    def fused(self, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        """``norm(self(x) + x)`` by the compiled kernels (``matching.ml.kernels``)."""
        return _layer_compiled(self, x, norm, None)

    @property
    def last_weights(self) -> torch.Tensor | None:
        """The attention weights of the last forward pass, (B, H, F, F)."""
        return torch.stack(self._weights, dim=1) if self._weights else None


class ProductiveAttention(nn.Module):
    r"""Attention over field tokens whose scores and values are element-wise products.

    For tokens :math:`x_1..x_F` and each head h with :math:`q_i = W_q x_i`, :math:`k_j = W_k x_j`,
    :math:`v_j = W_v x_j` (head width d) and a learned weight vector :math:`w_h \in \mathbb{R}^d`:

    .. math::
        s_{ij} = \frac{w_h^\top (q_i \odot k_j)}{\sqrt{d}},\qquad
        a_{ij} = \mathrm{softmax}_j(s_{ij}),\qquad
        o_i = W_o\Big[\, q_i \odot \textstyle\sum_j a_{ij} v_j \Big]_{h=1..H}

    The score weighs each product dimension separately (a dot product is :math:`w_h = \mathbf 1`),
    so the layer learns which feature products matter ("this age with this district"), and the
    output is a product of the token with what it attends to, a multiplicative feature
    interaction as in factorisation machines, rather than the additive mix of ordinary
    attention. :math:`\sum_j a_{ij}(q_i \odot v_j) = q_i \odot \sum_j a_{ij} v_j` keeps it as
    cheap as ordinary attention. The seed's version multiplied Q and K position by position,
    summed over the wrong axis and multiplied a weight of V's own shape by V: it could not run.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError("token width must be divisible by the number of heads")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.product_weights = nn.Parameter(torch.ones(heads, 1, self.head_dim))  # (H, 1, d)
        self.out = nn.Linear(dim, dim)
        self.dropout = Dropout(dropout)
        self._weights: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)  # (B, F, 3D)
        queries, keys, values = _split_heads(qkv, self.heads)  # each H x (B, F, d)
        self._weights, mixed = [], []
        for h, (q, k, v) in enumerate(zip(queries, keys, values, strict=True)):
            # sum_d w_d q_id k_jd  ==  (q * w) @ k^T
            scores = torch.bmm(q * self.product_weights[h], k.transpose(1, 2))  # (B, F, F)
            weights = _softmax(scores, self.head_dim**-0.5)
            self._weights.append(weights.detach())
            mixed.append(q * torch.bmm(self.dropout(weights), v))  # (B, F, d)
        return self.out(torch.cat(mixed, dim=-1))  # (B, F, D)

    def fused(self, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        """``norm(self(x) + x)`` by the compiled kernels (``matching.ml.kernels``)."""
        return _layer_compiled(self, x, norm, self.product_weights)

    @property
    def last_weights(self) -> torch.Tensor | None:
        """The attention weights of the last forward pass, (B, H, F, F)."""
        return torch.stack(self._weights, dim=1) if self._weights else None


class Tower(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.token_dim
        self.fields = FieldEmbedding(config)
        self.self_attention = FieldSelfAttention(d, config.heads, dropout=config.dropout)
        self.norm1 = nn.LayerNorm(d)
        self.productive = ProductiveAttention(d, config.heads, dropout=config.dropout)
        self.norm2 = nn.LayerNorm(d)
        layers: list[nn.Module] = []
        width = config.n_fields * d
        for hidden in config.dnn_hidden:
            # In place: BatchNorm's backward reads its input, not the output ReLU overwrites.
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), Dropout(config.dropout)]
            width = hidden
        self.dnn = nn.Sequential(*layers)
        self.transform = nn.Sequential(nn.Linear(width, config.embedding_dim), nn.PReLU())
        self.project = nn.Linear(config.embedding_dim, config.embedding_dim)

    def forward(self, x: TowerInput) -> torch.Tensor:
        tokens = self.fields(x)  # (B, F, D)
        # Each attention layer with its residual and LayerNorm runs as one compiled kernel where
        # it can (float32 on the CPU, a shape kernels.cpp takes): the inference pass in eval mode
        # without gradients, the training layer otherwise. Inference also folds BatchNorm into
        # the DNN block. Tests hold every path equal to PyTorch's operators.
        # (A quantised copy, whose Linears are no longer nn.Linear, keeps PyTorch's operators.)
        inference = not self.training and not torch.is_grad_enabled()
        fused = (
            tokens.device.type == "cpu" and tokens.dtype == torch.float32
            and kernels.available(*tokens.shape[1:], self.config.heads)
            and all(type(m) is nn.Linear for m in (self.self_attention.qkv, self.self_attention.out,
                                                   self.productive.qkv, self.productive.out))
        )
        folded = inference and all(type(m) is nn.Linear for m in self.dnn[::4])
        if self.config.use_self_attention:
            if fused:
                tokens = self.self_attention.fused(tokens, self.norm1)
            else:
                tokens = self.norm1(self.self_attention(tokens).add_(tokens))  # residual, in place
        if self.config.use_productive_attention:
            if fused:
                tokens = self.productive.fused(tokens, self.norm2)
            else:
                tokens = self.norm2(self.productive(tokens).add_(tokens))
        hidden = self._dnn_folded(tokens.flatten(1)) if folded else self._dnn(tokens.flatten(1))  # (B, F*D) -> (B, 128)
        linear, prelu = self.transform
        return l2_normalize(gemm.run(self.project, prelu(gemm.run(linear, hidden))))  # (B, 64)

    def _dnn(self, x: torch.Tensor) -> torch.Tensor:
        """The DNN block, each layer's BatchNorm, ReLU and dropout in training by the compiled
        ``kernels.batch_norm_relu_dropout`` where it applies (two passes over the activations
        backward instead of seven operators' worth), else by the modules themselves."""
        layers = list(self.dnn)
        for i in range(0, len(layers), 4):
            linear, norm, relu, dropout = layers[i:i + 4]
            z = gemm.run(linear, x)
            fused = None
            if isinstance(norm, nn.BatchNorm1d) and isinstance(dropout, Dropout):
                fused = kernels.batch_norm_relu_dropout(z, norm, dropout.p if dropout.training else 0.0)
            x = fused if fused is not None else dropout(relu(norm(z)))
        return x

    def _dnn_folded(self, x: torch.Tensor) -> torch.Tensor:
        """The DNN block in eval mode with each BatchNorm folded into the Linear before it
        (``W' = diag(g / sqrt(v + eps)) W``, ``b' = (b - m) g / sqrt(v + eps) + beta``): one pass
        over the activations per layer instead of three."""
        layers = list(self.dnn)
        for i in range(0, len(layers), 4):
            linear, norm = layers[i], layers[i + 1]
            assert isinstance(linear, nn.Linear) and isinstance(norm, nn.BatchNorm1d)
            assert norm.running_mean is not None and norm.running_var is not None
            factor = norm.weight * torch.rsqrt(norm.running_var + norm.eps)  # (H,)
            bias = (linear.bias - norm.running_mean) * factor + norm.bias
            x = gemm.linear_relu(x, linear.weight * factor[:, None], bias)
        return x


class SeedSetAttention(nn.Module):
    """RALM's look-alike scoring of targets against a set of seed users (KDD 2019, section 4.3).

    Global: self-attention pooling of the seeds, ``g = sum_i softmax_i(u . tanh(W_g s_i)) s_i``.
    Local: attention of each target over the seeds, ``l(t) = sum_i softmax_i(s_i . tanh(W_l t)) s_i``
    (the paper's ``softmax(tanh(E_s^T W E_u))``).
    Score: ``w * cos(t, g) + (1 - w) * cos(t, l(t))`` with w = 0.3 by default.

    Seeds may be k-means centroids with member counts: each centroid then enters both softmaxes
    with a ``log(count)`` bias, which reproduces the exact attention when a cluster's members are
    close to their centroid, and costs O(k) per target instead of O(seeds).
    """

    def __init__(self, dim: int, global_weight: float = 0.3) -> None:
        super().__init__()
        self.global_weight = global_weight
        self.w_global = nn.Linear(dim, dim, bias=False)
        self.u_global = nn.Parameter(torch.zeros(dim))
        self.w_local = nn.Linear(dim, dim, bias=False)
        # Start as similarity-weighted attention: identity maps, a neutral global query.
        nn.init.eye_(self.w_global.weight)
        nn.init.eye_(self.w_local.weight)

    def summaries(self, seeds: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        """The global summary of a seed set: (S, E) seeds -> (E,)."""
        bias = torch.zeros(len(seeds)) if counts is None else torch.log(counts.clamp_min(1e-9))
        logits = torch.tanh(self.w_global(seeds)) @ self.u_global + bias  # (S,)
        return torch.softmax(logits, dim=0) @ seeds

    def forward(self, seeds: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        """Look-alike score of each target: (S, E) seeds, (T, E) targets -> (T,)."""
        bias = torch.zeros(len(seeds)) if counts is None else torch.log(counts.clamp_min(1e-9))
        g = self.summaries(seeds, counts)  # (E,)
        local_logits = torch.tanh(self.w_local(targets)) @ seeds.T + bias  # (T, S)
        local = torch.softmax(local_logits, dim=1) @ seeds  # (T, E)
        cos_g = F.cosine_similarity(targets, g.unsqueeze(0), dim=1)
        cos_l = F.cosine_similarity(targets, local, dim=1)
        return self.global_weight * cos_g + (1 - self.global_weight) * cos_l


class RankingHead(nn.Module):
    """P(connect) of a (seed, candidate) pair from both embeddings, their product and difference,
    and the pair features. Runs over retrieved candidates only, never the whole user base."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        e = config.embedding_dim
        layers: list[nn.Module] = []
        width = 4 * e + 1 + config.pair_dim
        for hidden in config.rank_hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config.rank_dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        # Standardisation of the cosine and pair features, fitted on the training examples
        # (``fit_scaler``) and saved with the weights: their scales differ by orders of magnitude.
        self.register_buffer("pair_mean", torch.zeros(1 + config.pair_dim))
        self.register_buffer("pair_std", torch.ones(1 + config.pair_dim))

    def fit_scaler(self, cosine: torch.Tensor, pairs: torch.Tensor) -> None:
        x = torch.cat([cosine.reshape(-1, 1), pairs], dim=-1)
        self.pair_mean.copy_(x.mean(dim=0))
        self.pair_std.copy_(x.std(dim=0).clamp_min(1e-3))

    def forward(self, seed: torch.Tensor, target: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Logits: (B, E), (B, E), (B, P) -> (B,)."""
        cosine = (seed * target).sum(dim=-1, keepdim=True)  # (B, 1)
        scaled = (torch.cat([cosine, pairs], dim=-1) - self.pair_mean) / self.pair_std  # (B, 1 + P)
        x = torch.cat([seed, target, seed * target, (seed - target).abs(), scaled], dim=-1)
        return self.mlp(x).squeeze(-1)


class RALM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.seed_tower = Tower(config)
        self.target_tower = self.seed_tower if config.shared_towers else Tower(config)
        self.lookalike = SeedSetAttention(config.embedding_dim, config.lookalike_global_weight)
        self.ranker = RankingHead(config)

    def seed_embed(self, x: TowerInput) -> torch.Tensor:
        return self.seed_tower(x)

    def target_embed(self, x: TowerInput) -> torch.Tensor:
        return self.target_tower(x)

    def similarity_logits(self, seed: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cosine / temperature for every seed against every target: (B, E), (C, E) -> (B, C)."""
        return seed @ target.T / self.config.temperature

    def rank(self, seed: torch.Tensor, target: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return self.ranker(seed, target, pairs)


def default_model_config(n_users: int, n_venues: int, **overrides: object) -> ModelConfig:
    """Sizes for a dataset: one id-embedding row per venue and per user, hashed beyond 2**20."""
    from matching.ml.features import SCHEMA
    from matching.ml.pairs import PAIR_NAMES

    values: dict[str, object] = {
        "group_dims": tuple(len(names) for _, names in SCHEMA.groups),
        "venue_buckets": min(max(n_venues, 1), 1 << 20),
        "user_buckets": min(max(n_users, 1), 1 << 20),
        "pair_dim": len(PAIR_NAMES),
        **overrides,
    }
    return ModelConfig(**values)  # type: ignore[arg-type]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "RALM", "ModelConfig", "TowerInput", "Tower", "FieldSelfAttention", "ProductiveAttention", "SeedSetAttention",
    "RankingHead", "FieldEmbedding", "count_parameters", "default_model_config",
]
