"""Training: ``train(config, data) -> TrainResult``.

Two stages, each with early stopping on a validation split:

1. **Towers** learn who matches whom from positive pairs (friendships, co-participation, mutual
   likes), in one of seed 001's three modes:
   - ``pointwise``: binary cross-entropy on cosine logits, ``negatives_per_positive`` sampled
     negatives per positive (1:2 to 1:3);
   - ``pairwise``: triplets (user, positive, negative) with a hinge on the cosine margin
     (``pairwise_loss="hinge"``) or the logistic loss (``"logistic"``);
   - ``listwise``: softmax over the batch's other positives as negatives, with the log-Q
     correction (subtract log of each target's sampling probability from its logit), which
     stops popular people from being pushed away just for being sampled often.
   Negatives for the first two modes: ``uniform``, ``popularity`` (degree ** 0.75), or ``hard``
   (the current model's top retrievals that are not friends, refreshed every epoch, mixed half and
   half with popularity negatives). Positives of very popular people are down-sampled. An
   impression without a click is never a negative here: not being clicked is not "unlike".
2. **Ranking head**: the training friendships are split again into a "known" graph (80%) and
   "to find" edges (20%). Candidates are retrieved on the known graph exactly as at serving time,
   pair features are computed on it, and the head learns P(connect) of a candidate from both tower
   embeddings and the pair features, with the "to find" edges as positives. So the head is trained
   on the same kind of question it answers later, with no answer leaking into its inputs.

Adam with weight decay, gradient clipping, a cosine learning-rate schedule (a pure function),
fixed seeds, optional progress bar, gradient accumulation, and bf16 autocast (``amp=True``).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from matching.ml import allocator, gemm, kernels
from matching.ml.features import adjacency
from matching.ml.inputs import UserInputs
from matching.ml.model import RALM, ModelConfig
from matching.ml.pairs import PairFeaturizer
from matching.ml.retrieval import Retriever

MODES = ("pointwise", "pairwise", "listwise")
NEGATIVE_SAMPLERS = ("uniform", "popularity", "hard")


@dataclass
class TrainConfig:
    mode: str = "listwise"
    pairwise_loss: str = "logistic"  # or "hinge"
    margin: float = 0.2  # hinge margin on cosine
    negatives: str = "popularity"  # for pointwise / pairwise
    negatives_per_positive: int = 3
    logq_correction: bool = True
    popular_positive_threshold: float = 1e-3  # down-sample positives of targets above this share
    epochs: int = 40
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 1e-5
    grad_clip: float = 5.0
    # Id-bag tables of at least this many rows (the friend bags' one row per person, a large
    # city's venues) take sparse gradients and lazy Adam updates (``TowerOptimizer``).
    sparse_rows: int = 65_536
    accumulate: int = 1
    patience: int = 5
    validation_share: float = 0.1
    seed: int = 0
    amp: bool = False
    progress: bool = False
    rank_epochs: int = 40
    rank_lr: float = 1e-2
    rank_folds: int = 3  # cross-fitting folds for the ranking head's examples
    rank_known_share: float = 0.8  # share of training friendships kept as the known graph
    retrieve_k: int = 100  # candidates per channel
    max_rank_queries: int = 20_000  # users whose candidates train the ranking head

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if self.negatives not in NEGATIVE_SAMPLERS:
            raise ValueError(f"negatives must be one of {', '.join(NEGATIVE_SAMPLERS)}")
        if self.pairwise_loss not in ("hinge", "logistic"):
            raise ValueError("pairwise_loss must be hinge or logistic")
        if self.sparse_rows < 1:
            raise ValueError("sparse_rows must be at least 1")


@dataclass
class TrainingData:
    """What training needs: the tower inputs, the positives, and pair features for ranking."""

    inputs: UserInputs
    positives: np.ndarray  # (P, 2) user rows; symmetric pairs appear once
    pairs: PairFeaturizer
    lon: np.ndarray
    lat: np.ndarray
    # Friendship edges among ``positives`` (the graph the friend bags and pair features read).
    friend_edges: np.ndarray


@dataclass
class TrainResult:
    model: RALM
    model_config: ModelConfig
    train_config: TrainConfig
    metrics: dict[str, float]
    curves: dict[str, list[float]] = field(default_factory=dict)

    def checkpoint(self) -> dict[str, object]:
        return {
            "state_dict": self.model.state_dict(),
            "model_config": self.model_config.to_dict(),
            "train_config": asdict(self.train_config),
            "metrics": self.metrics,
            "curves": self.curves,
        }


def lr_at(step: int, total: int, base: float, warmup: int = 50) -> float:
    """Linear warm-up, then cosine decay to 5% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# losses (each on a hand-made batch in the tests)


def pointwise_loss(seed: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """BCE on the cosine of each (seed, target) row pair, scaled by 1 / temperature."""
    logits = (seed * target).sum(-1) / temperature
    return F.binary_cross_entropy_with_logits(logits, labels)


def triplet_loss(seed: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, *, kind: str, margin: float, temperature: float) -> torch.Tensor:
    s_pos = (seed * pos).sum(-1)
    s_neg = (seed * neg).sum(-1)
    if kind == "hinge":
        return F.relu(margin - s_pos + s_neg).mean()
    return F.softplus(-(s_pos - s_neg) / temperature).mean()


def logq_logits(seed: torch.Tensor, target: torch.Tensor, log_q: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """In-batch logits ``cos / temperature - log q(target)`` (B, B); row i's positive is column i."""
    logits = seed @ target.T / temperature
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    return logits


def listwise_loss(seed: torch.Tensor, target: torch.Tensor, log_q: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """``F.cross_entropy(logq_logits(...), arange(B))``: each row's own column among the batch."""
    if torch.is_autocast_enabled("cpu"):
        return F.cross_entropy(logq_logits(seed, target, log_q, temperature), torch.arange(len(seed)))
    return _InBatchSoftmaxLoss.apply(seed, target, log_q, 1.0 / temperature)


class _InBatchSoftmaxLoss(torch.autograd.Function):
    """The listwise loss with one (B, B) matrix instead of four.

    ``F.cross_entropy`` over the logits allocates and sweeps the logits, their log-softmax, a
    one-hot gradient and the logits' gradient, each B x B (4 MB at B = 1024). Here the logits
    become the softmax P in place, and the gradients are ``(P - I) @ x``, computed as
    ``P @ x - x`` so that P is only read: forward and backward at B = 1024 take 3.6 ms instead
    of 6.4 ms on two cores.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, seed: torch.Tensor, target: torch.Tensor, log_q: torch.Tensor | None, scale: float,
    ) -> torch.Tensor:
        if log_q is None:
            logits = gemm.mm(seed * scale, target.T)  # (B, B)
        else:
            # The shift as one more column of the product, [scale * s, 1] . [t, -log q]:
            # written by the matrix product itself instead of a (B, B) pass of its own.
            ones = torch.ones(len(seed), 1, dtype=seed.dtype)
            logits = gemm.mm(torch.cat([seed * scale, ones], 1), torch.cat([target, -log_q.unsqueeze(1)], 1).T)
        positive = logits.diagonal().clone()  # (B,)
        log_total = kernels.softmax_rows_(logits)  # one pass a row, the row in L1
        if log_total is None:
            top = logits.amax(dim=1, keepdim=True)  # (B, 1)
            logits.sub_(top).exp_()
            total = logits.sum(dim=1, keepdim=True)
            logits.div_(total)
            log_total = (total.log() + top).squeeze(1)
        ctx.save_for_backward(seed, target, logits)  # now the softmax P
        ctx.scale = scale
        return log_total.sub_(positive).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        seed, target, probabilities = ctx.saved_tensors
        factor = grad * (ctx.scale / len(seed))  # d loss / d logits = (P - I) / B
        grad_seed = (gemm.mm(probabilities, target) - target).mul_(factor) if ctx.needs_input_grad[0] else None
        grad_target = (gemm.mm_tn(probabilities, seed) - seed).mul_(factor) if ctx.needs_input_grad[1] else None
        return grad_seed, grad_target, None, None


# ---------------------------------------------------------------------------------------------
# sampling


def split_validation(positives: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(len(positives))
    n_val = int(round(len(positives) * share)) if len(positives) >= 20 else 0
    return positives[order[n_val:]], positives[order[:n_val]]


def directed(pairs: np.ndarray) -> np.ndarray:
    """Both directions of each pair: a friendship is a positive for each side."""
    return np.concatenate([pairs, pairs[:, ::-1]]) if len(pairs) else pairs.reshape(0, 2)


def downsample_popular(pairs: np.ndarray, n: int, threshold: float, rng: np.random.Generator) -> np.ndarray:
    """word2vec-style: keep a positive of target v with probability min(1, sqrt(t / f(v)))."""
    if not len(pairs):
        return pairs
    freq = np.bincount(pairs[:, 1], minlength=n) / len(pairs)
    keep_p = np.minimum(1.0, np.sqrt(threshold / np.maximum(freq[pairs[:, 1]], 1e-12)))
    return pairs[rng.random(len(pairs)) < keep_p]


def sample_negatives(
    how: str, users: np.ndarray, count: int, n: int, degree: np.ndarray,
    rng: np.random.Generator, hard: list[np.ndarray] | None = None,
) -> np.ndarray:
    """``count`` negatives per user row: (len(users), count) user rows."""
    if how == "uniform":
        return rng.integers(0, n, size=(len(users), count))
    p = np.power(degree + 1.0, 0.75)
    p /= p.sum()
    popular = rng.choice(n, size=(len(users), count), p=p)
    if how == "popularity" or hard is None:
        return popular
    # Hard: half from the model's own non-friend retrievals, the rest by popularity.
    out = popular.copy()
    for i, u in enumerate(users):
        pool = hard[u]
        if len(pool):
            take = min(len(pool), (count + 1) // 2)
            out[i, :take] = rng.choice(pool, size=take, replace=False)
    return out


# ---------------------------------------------------------------------------------------------
# the tower stage


def _embed(model: RALM, inputs: UserInputs, config: ModelConfig, which: str, batch: int = 4096) -> np.ndarray:
    tower = model.seed_tower if which == "seed" else model.target_tower
    tower.eval()
    allocator.for_batch_work()  # each batch's activations again: keep them mapped
    out = []
    with torch.no_grad():
        for start in range(0, inputs.n_users, batch):
            rows = np.arange(start, min(start + batch, inputs.n_users))
            out.append(tower(inputs.batch(rows, config)).numpy())
    return np.concatenate(out) if out else np.zeros((0, config.embedding_dim), dtype=np.float32)


def embed_users(model: RALM, inputs: UserInputs, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Seed and target embeddings of every user, (n, E) float32 each."""
    return (_embed(model, inputs, model.config, "seed", batch), _embed(model, inputs, model.config, "target", batch))


def _tower_loss(
    model: RALM, cfg: ModelConfig, tc: TrainConfig, inputs: UserInputs, pairs: np.ndarray,
    degree: np.ndarray, log_q_all: np.ndarray, rng: np.random.Generator, training: bool,
    hard: list[np.ndarray] | None,
) -> torch.Tensor:
    u, v = pairs[:, 0], pairs[:, 1]
    dropout = cfg.bag_dropout if training else 0.0
    seed = model.seed_embed(inputs.batch(u, cfg, hide=v, bag_dropout=dropout, rng=rng))
    if tc.mode == "listwise":
        target = model.target_embed(inputs.batch(v, cfg, hide=u, bag_dropout=dropout, rng=rng))
        log_q = torch.from_numpy(log_q_all[v]) if tc.logq_correction else None
        return listwise_loss(seed, target, log_q, cfg.temperature)
    n = inputs.n_users
    negs = sample_negatives(tc.negatives, u, tc.negatives_per_positive, n, degree, rng, hard)
    if tc.mode == "pointwise":
        k = tc.negatives_per_positive
        targets = np.concatenate([v, negs.ravel()])
        hide = np.concatenate([u, np.repeat(u, k)])
        target = model.target_embed(inputs.batch(targets, cfg, hide=hide, bag_dropout=dropout, rng=rng))
        seeds = torch.cat([seed, seed.repeat_interleave(k, dim=0)])
        labels = torch.cat([torch.ones(len(u)), torch.zeros(len(u) * k)])
        return pointwise_loss(seeds, target, labels, cfg.temperature)
    # Every positive against each of its k negatives: k triplets per positive.
    k = tc.negatives_per_positive
    pos = model.target_embed(inputs.batch(v, cfg, hide=u, bag_dropout=dropout, rng=rng))
    neg = model.target_embed(inputs.batch(negs.ravel(), cfg, hide=np.repeat(u, k), bag_dropout=dropout, rng=rng))
    return triplet_loss(seed.repeat_interleave(k, dim=0), pos.repeat_interleave(k, dim=0), neg,
                        kind=tc.pairwise_loss, margin=tc.margin, temperature=cfg.temperature)


class FlatAdam(torch.optim.Adam):
    """Adam (fused) over parameters laid out as views of one flat tensor, with their gradients
    views of another, for as long as training runs.

    The towers have ~100 parameter tensors; clipping their gradients took one norm and one
    multiply per tensor (2 ms of a 76 ms step here) and even the fused Adam pays per tensor
    (2.4 ms against 1.1 ms over one tensor of the same size). Over the flat tensors both are a
    pass or two over memory. Backward adds each gradient into its view in place.

    ``zero_grad`` zeroes the gradient buffer and never frees it (``set_to_none`` is ignored): a
    parameter whose ``.grad`` was set to None would take its next gradient outside the buffer and
    stop learning, so it also points every ``.grad`` back at its view. ``release()`` gives each
    parameter its own storage again when training ends.
    """

    def __init__(self, params: list[torch.nn.Parameter], **options: object) -> None:
        params = list(dict.fromkeys(params))  # shared towers: each parameter once
        total = sum(p.numel() for p in params)
        like = params[0] if params else torch.empty(0)
        flat = torch.empty(total, dtype=like.dtype, device=like.device)
        grad = torch.zeros_like(flat)
        self.members, self._grads, start = params, [], 0
        for p in params:
            stop = start + p.numel()
            flat[start:stop].copy_(p.detach().reshape(-1))
            p.data = flat[start:stop].view_as(p)
            self._grads.append(grad[start:stop].view_as(p))
            p.grad = self._grads[-1]
            start = stop
        self.flat = torch.nn.Parameter(flat)
        self.flat.grad = grad
        super().__init__([self.flat], fused=True, **options)  # type: ignore[arg-type]

    def zero_grad(self, set_to_none: bool = True) -> None:
        assert self.flat.grad is not None
        self.flat.grad.zero_()
        for p, g in zip(self.members, self._grads, strict=True):
            p.grad = g

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` over every member at once."""
        return torch.nn.utils.clip_grad_norm_([self.flat], max_norm)

    def release(self) -> None:
        """Each parameter in a storage of its own again, without gradients (the optimizer is
        done: stepping it afterwards would change nothing the model reads)."""
        for p in self.members:
            p.data = p.data.clone()
            p.grad = None


class LazyAdam:
    """Adam for embedding tables whose gradients are sparse: only the rows a batch touched move,
    and only their moments decay (TensorFlow's LazyAdam, ``torch.optim.SparseAdam`` with Adam's L2
    weight decay on the touched rows). On rows that every step touches it is Adam exactly; a row
    untouched for a while keeps its moments instead of decaying them, which is what makes a step
    cost the batch's rows rather than the table's."""

    def __init__(self, params: list[torch.nn.Parameter], *, lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = list(dict.fromkeys(params))
        self.param_groups = [{"params": self.params, "lr": lr}]
        self.weight_decay, self.betas, self.eps, self.steps = weight_decay, betas, eps, 0
        self.state = {p: (torch.zeros_like(p), torch.zeros_like(p)) for p in self.params}

    def gradients(self) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
        """Each parameter's gradient coalesced (one entry per touched row), stored back.

        The bag backward writes each touched row once, in increasing order, but autograd's
        accumulation drops the tensor's "coalesced" mark: rows still strictly increasing are
        marked again (a comparison) rather than sorted again (2 to 5 ms a table at 1,000,000
        rows); gradients accumulated over several backwards are coalesced properly."""
        out = []
        for p in self.params:
            grad = p.grad
            if grad is None:
                continue
            if not grad.is_sparse:
                raise ValueError("LazyAdam takes sparse gradients: the table's module needs sparse=True")
            if not grad.is_coalesced():
                rows = grad._indices()[0]
                if bool((rows[1:] > rows[:-1]).all()):
                    grad = torch.sparse_coo_tensor(grad._indices(), grad._values(), grad.shape,
                                                   check_invariants=False, is_coalesced=True)
                else:
                    grad = grad.coalesce()
                p.grad = grad
            out.append((p, grad))
        return out

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        (beta1, beta2), lr = self.betas, self.param_groups[0]["lr"]
        correction1, correction2 = 1 - beta1**self.steps, 1 - beta2**self.steps
        for p, grad in self.gradients():
            rows, g = grad.indices()[0], grad.values()
            exp_avg, exp_avg_sq = self.state[p]
            if kernels.lazy_adam_rows(rows, g, p.data, exp_avg, exp_avg_sq, lr=lr, betas=self.betas, eps=self.eps,
                                      weight_decay=self.weight_decay, correction1=correction1,
                                      correction2=correction2):
                continue
            if self.weight_decay:
                g = g + self.weight_decay * p.index_select(0, rows)
            m = exp_avg.index_select(0, rows).mul_(beta1).add_(g, alpha=1 - beta1)
            v = exp_avg_sq.index_select(0, rows).mul_(beta2).addcmul_(g, g, value=1 - beta2)
            exp_avg.index_copy_(0, rows, m)
            exp_avg_sq.index_copy_(0, rows, v)
            update = (m / correction1).div_((v / correction2).sqrt_().add_(self.eps))
            # index_copy_ of the new rows: index_add_ into a million-row table took 10 times as long.
            p.index_copy_(0, rows, p.index_select(0, rows).sub_(update, alpha=lr))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class TowerOptimizer:
    """The towers' optimizer: ``FlatAdam`` over the dense parameters and ``LazyAdam`` over the id
    tables of at least ``sparse_rows`` rows, whose modules it switches to sparse gradients.

    At 1,000,000 people the friend-bag tables (one row per person, in each tower) are 32 of the
    towers' 33 million parameters; dense, every step zeroed, filled, added, clipped and stepped
    over all of them (76 of a 112 ms step here, docs/BENCHMARKS.md), for the 50,000 or so rows a
    batch touches. Gradient clipping takes one norm over both kinds."""

    def __init__(self, model: RALM, tc: TrainConfig) -> None:
        towers = (model.seed_tower, model.target_tower)
        self.tables = [
            bag for tower in towers for bag in (tower.fields.venues, tower.fields.friends)
            if bag is not None and bag.weight.requires_grad and bag.weight.shape[0] >= tc.sparse_rows
        ]
        sparse = {id(bag.weight) for bag in self.tables}
        for bag in self.tables:
            bag.sparse = True
        dense = [p for tower in towers for p in tower.parameters() if p.requires_grad and id(p) not in sparse]
        self.dense = FlatAdam(dense, lr=tc.lr, weight_decay=tc.weight_decay)
        self.lazy = LazyAdam([bag.weight for bag in self.tables], lr=tc.lr, weight_decay=tc.weight_decay)
        self.param_groups = [*self.dense.param_groups, *self.lazy.param_groups]

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` over the dense and the sparse gradients together."""
        assert self.dense.flat.grad is not None
        sparse = [grad.values() for _, grad in self.lazy.gradients()]
        total = torch.linalg.vector_norm(torch.stack([
            torch.linalg.vector_norm(self.dense.flat.grad), *(torch.linalg.vector_norm(v) for v in sparse),
        ]))
        scale = (max_norm / (total + 1e-6)).clamp_(max=1.0)
        if not float(scale) >= 1.0:  # most steps are under the norm: no pass (a NaN norm still spreads)
            for values in (self.dense.flat.grad, *sparse):
                values.mul_(scale)
        return total

    def step(self) -> None:
        self.dense.step()
        self.lazy.step()

    def zero_grad(self) -> None:
        self.dense.zero_grad()
        self.lazy.zero_grad()

    def release(self) -> None:
        """Training is over: the dense parameters back in storages of their own, the tables'
        gradients dense again for whoever trains the model next."""
        self.dense.release()
        self.lazy.zero_grad()
        for bag in self.tables:
            bag.sparse = False


def tower_optimizer(model: RALM, tc: TrainConfig) -> TowerOptimizer:
    """Adam over the towers' parameters (the ranking head and look-alike layer train elsewhere)."""
    return TowerOptimizer(model, tc)


def tower_train_step(
    model: RALM, optimizer: TowerOptimizer, tc: TrainConfig, inputs: UserInputs, pairs: np.ndarray,
    degree: np.ndarray, log_q_all: np.ndarray, rng: np.random.Generator, hard: list[np.ndarray] | None = None,
    *, lr: float, apply: bool = True,
) -> float:
    """One training step on a batch of positive pairs; returns its loss.

    Builds both sides' inputs, runs forward and backward, and (when ``apply``; false between the
    batches of a gradient accumulation) clips the gradients and steps the optimizer at ``lr``.
    ``train_towers`` runs it for every batch, and ``bench_model`` times it.
    """
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tc.amp):
        loss = _tower_loss(model, model.config, tc, inputs, pairs, degree, log_q_all, rng, True, hard)
    (loss / tc.accumulate).backward()
    if apply:
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.clip_grad_norm_(tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad()
    return float(loss.detach())


def _hard_negatives(model: RALM, data: TrainingData, k: int = 20) -> list[np.ndarray]:
    seed, target = embed_users(model, data.inputs)
    retriever = Retriever(data.inputs.friends, data.inputs.venues, data.lon, data.lat, seed, target, k=k)
    return retriever.retrieve(np.arange(data.inputs.n_users), channels=("two_tower",)).users


def train_towers(model: RALM, tc: TrainConfig, data: TrainingData, rng: np.random.Generator) -> tuple[dict[str, float], dict[str, list[float]]]:
    allocator.for_batch_work()  # the same large buffers every step: keep them mapped
    cfg = model.config
    n = data.inputs.n_users
    train_pairs, val_pairs = split_validation(data.positives, tc.validation_share, rng)
    train_directed, val_directed = directed(train_pairs), directed(val_pairs)
    degree = np.bincount(train_directed[:, 1], minlength=n).astype(np.float64) if len(train_directed) else np.zeros(n)
    # Sampling probability of each target among in-batch positives, for the log-Q correction.
    log_q_all = np.log((degree + 1.0) / (degree + 1.0).sum()).astype(np.float32)
    optimizer = tower_optimizer(model, tc)
    steps_per_epoch = max(1, math.ceil(len(train_directed) / tc.batch_size))
    total_steps = steps_per_epoch * tc.epochs
    curves: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    best_val, best_state, stale, step = math.inf, copy.deepcopy(model.state_dict()), 0, 0
    pairs_trained, step_seconds = 0, 0.0  # throughput of the training steps alone
    hard: list[np.ndarray] | None = None
    epochs = range(tc.epochs)
    if tc.progress:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc=f"towers ({tc.mode})", unit="epoch")
    for _epoch in epochs:
        if tc.negatives == "hard" and tc.mode != "listwise":
            hard = _hard_negatives(model, data)
        model.train()
        epoch_pairs = downsample_popular(train_directed, n, tc.popular_positive_threshold, rng)
        epoch_pairs = epoch_pairs[rng.permutation(len(epoch_pairs))]
        losses = []
        optimizer.zero_grad()
        epoch_started = time.perf_counter()
        for i, start in enumerate(range(0, len(epoch_pairs), tc.batch_size)):
            batch = epoch_pairs[start:start + tc.batch_size]
            if len(batch) < 2:
                continue
            apply = (i + 1) % tc.accumulate == 0
            losses.append(tower_train_step(
                model, optimizer, tc, data.inputs, batch, degree, log_q_all, rng, hard,
                lr=lr_at(step, total_steps, tc.lr), apply=apply,
            ))
            step += int(apply)
            pairs_trained += len(batch)
        step_seconds += time.perf_counter() - epoch_started
        curves["train_loss"].append(float(np.mean(losses)) if losses else math.nan)
        # The same negatives every epoch, so epochs are compared on the same question.
        # (Hard negatives change with the model, so validation draws by popularity instead.)
        val_loss = _validation_loss(model, cfg, tc, data, val_directed, degree, log_q_all, np.random.default_rng(tc.seed + 1), None)
        curves["val_loss"].append(val_loss)
        if val_loss < best_val - 1e-4:
            best_val, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= tc.patience:
                break
    model.load_state_dict(best_state)
    optimizer.release()
    return {
        "tower_val_loss": best_val, "tower_epochs": len(curves["val_loss"]),
        "tower_pairs": float(pairs_trained), "tower_step_seconds": step_seconds,
    }, curves


def _validation_loss(model: RALM, cfg: ModelConfig, tc: TrainConfig, data: TrainingData, pairs: np.ndarray,
                     degree: np.ndarray, log_q_all: np.ndarray, rng: np.random.Generator,
                     hard: list[np.ndarray] | None) -> float:
    if len(pairs) < 2:
        return math.nan
    model.eval()
    # A fixed order and batch size, so epochs are compared on the same question.
    losses, weights = [], []
    with torch.no_grad():
        for start in range(0, len(pairs), tc.batch_size):
            batch = pairs[start:start + tc.batch_size]
            if len(batch) < 2:
                continue
            loss = _tower_loss(model, cfg, tc, data.inputs, batch, degree, log_q_all, rng, False, hard)
            losses.append(float(loss))
            weights.append(len(batch))
    return float(np.average(losses, weights=weights)) if losses else math.nan


# ---------------------------------------------------------------------------------------------
# the ranking stage


@dataclass
class RankingExamples:
    queries: np.ndarray  # (R,) user row of each example
    candidates: np.ndarray  # (R,) candidate row
    pair_features: np.ndarray  # (R, P)
    labels: np.ndarray  # (R,)


def ranking_examples(
    queries: np.ndarray, candidates: list[np.ndarray], featurizer: PairFeaturizer,
    positives: set[tuple[int, int]] | None = None,
) -> RankingExamples:
    q = np.concatenate([np.full(len(c), u) for u, c in zip(queries, candidates, strict=True)]) if len(queries) else np.zeros(0, np.int64)
    c = np.concatenate(candidates) if candidates else np.zeros(0, np.int64)
    feats = [featurizer.pair_features(int(u), cand) for u, cand in zip(queries, candidates, strict=True) if len(cand)]
    pair_features = np.concatenate(feats) if feats else np.zeros((0, len(featurizer.pair_features(0, np.zeros(0, np.int64))[0:0].T)), np.float32)
    labels = np.array([(int(a), int(b)) in positives for a, b in zip(q, c, strict=True)], dtype=np.float32) if positives is not None else np.zeros(len(q), np.float32)
    return RankingExamples(q.astype(np.int64), c.astype(np.int64), pair_features, labels)


def rank_logits(model: RALM, seed_emb: np.ndarray, target_emb: np.ndarray, examples: RankingExamples, batch: int = 65536) -> np.ndarray:
    model.ranker.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(examples.queries), batch):
            sl = slice(start, start + batch)
            out.append(model.rank(
                torch.from_numpy(seed_emb[examples.queries[sl]]),
                torch.from_numpy(target_emb[examples.candidates[sl]]),
                torch.from_numpy(examples.pair_features[sl]),
            ).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def split_known(edges: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Friendships split into a known graph and edges to find (for the ranking head)."""
    order = rng.permutation(len(edges))
    n_known = int(round(len(edges) * share))
    return edges[order[:n_known]], edges[order[n_known:]]


@dataclass
class FoldExamples:
    """Ranking examples of one fold with the embeddings of the towers that never saw its edges."""

    seed_emb: np.ndarray
    target_emb: np.ndarray
    examples: RankingExamples


def fold_examples(
    model: RALM, tc: TrainConfig, data: TrainingData, build_featurizer, known: np.ndarray,
    to_find: np.ndarray, rng: np.random.Generator,
) -> FoldExamples:
    """Candidates retrieved on the ``known`` graph, labelled by ``to_find``, as serving would see them.

    ``model``'s towers must not have learned from ``to_find``: their cosine would be memorised on
    exactly these pairs and the head would learn to trust it more than it deserves on new ones.
    ``build_featurizer(friend_edges) -> PairFeaturizer`` recomputes pair features on a graph.
    """
    n = data.inputs.n_users
    known_graph = adjacency(known[:, 0], known[:, 1], n)
    inputs = data.inputs.with_friends(known_graph)
    seed_emb, target_emb = embed_users(model, inputs)
    retriever = Retriever(known_graph, inputs.venues, data.lon, data.lat, seed_emb, target_emb, k=tc.retrieve_k)
    positives = {(int(a), int(b)) for a, b in directed(to_find)}
    queries = np.unique(directed(to_find)[:, 0])
    if len(queries) > tc.max_rank_queries:
        queries = np.sort(rng.choice(queries, tc.max_rank_queries, replace=False))
    candidates = retriever.retrieve(queries).users
    examples = ranking_examples(queries, candidates, build_featurizer(known), positives)
    return FoldExamples(seed_emb, target_emb, examples)


def train_ranker(model: RALM, tc: TrainConfig, folds: list[FoldExamples], rng: np.random.Generator) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Fit the ranking head on the folds' examples with a listwise loss per query.

    Each fold's rows index its own embedding tables (stacked with an offset), and a query's
    candidates are grouped per fold. A tenth of the queries is held out for early stopping on
    Recall@20.
    """
    n = folds[0].seed_emb.shape[0]
    seed_emb = np.concatenate([f.seed_emb for f in folds])
    target_emb = np.concatenate([f.target_emb for f in folds])
    examples = RankingExamples(
        queries=np.concatenate([f.examples.queries + i * n for i, f in enumerate(folds)]),
        candidates=np.concatenate([f.examples.candidates + i * n for i, f in enumerate(folds)]),
        pair_features=np.concatenate([f.examples.pair_features for f in folds]),
        labels=np.concatenate([f.examples.labels for f in folds]),
    )
    # Hold out queries (not rows) for validation, so a user's candidates stay together.
    has_positive = np.unique(examples.queries[examples.labels > 0])
    val_users = rng.choice(has_positive, max(1, len(has_positive) // 10), replace=False)
    train_users = np.setdiff1d(has_positive, val_users)
    groups = _groups(examples.queries)
    ranker = model.ranker
    optimizer = torch.optim.Adam(ranker.parameters(), lr=tc.rank_lr, weight_decay=tc.weight_decay)
    x_seed, x_target = torch.from_numpy(seed_emb), torch.from_numpy(target_emb)
    pf, y = torch.from_numpy(examples.pair_features), torch.from_numpy(examples.labels)
    ranker.fit_scaler((x_seed[examples.queries] * x_target[examples.candidates]).sum(-1), pf)
    curves: dict[str, list[float]] = {"rank_train_loss": [], "rank_val_recall": []}
    best, best_state, stale = -1.0, copy.deepcopy(ranker.state_dict()), 0
    for _epoch in range(tc.rank_epochs):
        ranker.train()
        losses = []
        for batch in np.array_split(rng.permutation(train_users), max(1, len(train_users) // 64)):
            index, mask = _padded(groups, batch)
            rows = torch.from_numpy(index[mask])
            logits = torch.full(index.shape, -1e9)
            logits[torch.from_numpy(mask)] = ranker(x_seed[examples.queries[rows]], x_target[examples.candidates[rows]], pf[rows])
            labels = torch.zeros(index.shape)
            labels[torch.from_numpy(mask)] = y[rows]
            loss = listwise_group_loss(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ranker.parameters(), tc.grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
        curves["rank_train_loss"].append(float(np.mean(losses)) if losses else math.nan)
        recall = _group_recall(model, seed_emb, target_emb, examples, groups, val_users, k=20)
        curves["rank_val_recall"].append(recall)
        if recall > best + 1e-4:
            best, best_state, stale = recall, copy.deepcopy(ranker.state_dict()), 0
        else:
            stale += 1
            if stale >= tc.patience:
                break
    ranker.load_state_dict(best_state)
    return {
        "rank_val_recall@20": best,
        "rank_examples": float(len(examples.labels)),
        "rank_positive_share": float(examples.labels.mean()) if len(examples.labels) else 0.0,
    }, curves


def listwise_group_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of each query's positives among its candidates.

    ``logits`` (Q, C) with padding at -1e9, ``labels`` (Q, C) 0/1; each positive counts once.
    """
    log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    return -(log_probs * labels).sum() / labels.sum().clamp_min(1.0)


def _groups(queries: np.ndarray) -> dict[int, np.ndarray]:
    """Row indices of each query's examples (rows of one query are contiguous)."""
    if not len(queries):
        return {}
    starts = np.flatnonzero(np.r_[True, queries[1:] != queries[:-1]])
    ends = np.r_[starts[1:], len(queries)]
    return {int(queries[s]): np.arange(s, e) for s, e in zip(starts, ends, strict=True)}


def _padded(groups: dict[int, np.ndarray], users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = [groups[int(u)] for u in users]
    width = max(len(r) for r in rows)
    index = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for i, r in enumerate(rows):
        index[i, :len(r)] = r
        mask[i, :len(r)] = True
    return index, mask


def _group_recall(model: RALM, seed_emb: np.ndarray, target_emb: np.ndarray, examples: RankingExamples,
                  groups: dict[int, np.ndarray], users: np.ndarray, k: int) -> float:
    """Mean over ``users`` of the share of their positives the head puts in its top k."""
    rows = np.concatenate([groups[int(u)] for u in users])
    sub = RankingExamples(examples.queries[rows], examples.candidates[rows], examples.pair_features[rows], examples.labels[rows])
    logits = rank_logits(model, seed_emb, target_emb, sub)
    recalls, start = [], 0
    for u in users:
        size = len(groups[int(u)])
        s, lab = logits[start:start + size], sub.labels[start:start + size]
        start += size
        top = np.argsort(-s, kind="stable")[:k]
        recalls.append(lab[top].sum() / max(lab.sum(), 1.0))
    return float(np.mean(recalls)) if recalls else math.nan


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties count one half)."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# ---------------------------------------------------------------------------------------------


def train(model_config: ModelConfig, train_config: TrainConfig, data: TrainingData, build_featurizer, model: RALM | None = None) -> TrainResult:
    """Towers and ranking head; ``model`` warm-starts from existing weights.

    Costs ``rank_folds + 1`` tower trainings: the price of a head that learns how much to trust
    the towers on pairs they have never seen.
    """
    rng = seed_everything(train_config.seed)
    started = time.perf_counter()
    model = model or RALM(model_config)
    initial = copy.deepcopy(model.state_dict())
    n = data.inputs.n_users
    # 1. Cross-fitting: for each fold, towers that never saw a kept-back share of friendships
    #    produce the ranking head's examples for exactly those friendships.
    folds, fold_metrics = [], []
    pairs_trained, step_seconds = 0.0, 0.0  # over every tower training, the folds' included
    for _fold in range(train_config.rank_folds):
        known, to_find = split_known(data.friend_edges, train_config.rank_known_share, rng)
        if not len(to_find):
            continue
        hidden = directed(to_find)
        keys = data.positives[:, 0] * n + data.positives[:, 1]
        fold_data = TrainingData(
            inputs=data.inputs.with_friends(adjacency(known[:, 0], known[:, 1], n)),
            positives=data.positives[~np.isin(keys, hidden[:, 0] * n + hidden[:, 1])],
            pairs=data.pairs, lon=data.lon, lat=data.lat, friend_edges=known,
        )
        model.load_state_dict(initial)
        metrics, _ = train_towers(model, train_config, fold_data, rng)
        fold_metrics.append(metrics["tower_val_loss"])
        pairs_trained += metrics["tower_pairs"]
        step_seconds += metrics["tower_step_seconds"]
        folds.append(fold_examples(model, train_config, data, build_featurizer, known, to_find, rng))
    # 2. The towers that serve: every friendship, warm from the given weights.
    model.load_state_dict(initial)
    tower_metrics, curves = train_towers(model, train_config, data, rng)
    pairs_trained += tower_metrics.pop("tower_pairs")
    step_seconds += tower_metrics.pop("tower_step_seconds")
    # 3. The ranking head on all folds' examples.
    rank_metrics, rank_curves = train_ranker(model, train_config, folds, rng) if folds else ({}, {})
    tower_metrics["fold_tower_val_loss"] = float(np.mean(fold_metrics)) if fold_metrics else math.nan
    model.eval()
    metrics = {
        **tower_metrics, **rank_metrics,
        "train_seconds": time.perf_counter() - started,
        # Pairs through training steps (batch inputs, forward, backward, optimizer step) per
        # second of those steps, over all rank_folds + 1 tower trainings, as bench_model
        # measures it: validation passes and the folds' retrieval are not training throughput.
        "tower_pairs_per_second": pairs_trained / max(step_seconds, 1e-9),
    }
    return TrainResult(model, model_config, train_config, metrics, {**curves, **rank_curves})
