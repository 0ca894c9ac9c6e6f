"""Keeping a model good after its first training: the evaluation gate, incremental updates of
the ranking head, distillation into a smaller student, and dynamic int8 quantisation.

No Django here; the services in ``matching.services.lifecycle`` feed these from the database.
"""

from __future__ import annotations

import copy
import io
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from matching.ml.features import adjacency
from matching.ml.inputs import UserInputs
from matching.ml.model import RALM, ModelConfig
from matching.ml.train import embed_users, listwise_loss

# --- the evaluation gate --------------------------------------------------------------------

GATE_SLICE_PER_MILLE = 100  # 10% of friendships are kept out of every training


def gate_slice(u_ids: np.ndarray, v_ids: np.ndarray, per_mille: int = GATE_SLICE_PER_MILLE) -> np.ndarray:
    """Mask of the pairs in the gate slice: a fixed hash (splitmix64) of the unordered id pair.

    Stable across nights and datasets growing: a pair is in or out forever, whichever rows the
    two people get, so no version ever trains on the pairs every version is judged on.
    """
    a = np.minimum(u_ids, v_ids).astype(np.uint64)
    b = np.maximum(u_ids, v_ids).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = a * np.uint64(0x9E3779B97F4A7C15) ^ (b + np.uint64(0x632BE59BD9B4E019))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x % np.uint64(1000)) < np.uint64(per_mille)


def retrieval_recall(
    model: RALM, inputs: UserInputs, known: np.ndarray, held_out: np.ndarray, *, k: int = 20,
    max_queries: int = 2_000, seed: int = 0, chunk: int = 256,
) -> float:
    """Recall@k of held-out pairs by two-tower retrieval, with only the ``known`` graph as input.

    1. Rebuild the friend input from ``known`` (a held-out pair contributes nothing).
    2. Embed everyone; for up to ``max_queries`` people with a held-out partner (seeded sample),
       score every other person, excluding themselves and their known friends.
    3. Recall@k = share of each query's held-out partners in its top k, averaged over queries.
    """
    n = inputs.n_users
    known_adj = adjacency(known[:, 0], known[:, 1], n)
    held_adj = adjacency(held_out[:, 0], held_out[:, 1], n)
    seed_emb, target_emb = embed_users(model, inputs.with_friends(known_adj))
    queries = np.flatnonzero(np.diff(held_adj.indptr) > 0)
    if not len(queries):
        return float("nan")
    if len(queries) > max_queries:
        queries = np.sort(np.random.default_rng(seed).choice(queries, max_queries, replace=False))
    recalls = []
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        scores = seed_emb[q] @ target_emb.T  # (Q, n)
        scores[np.arange(len(q)), q] = -np.inf
        rows, cols = known_adj[q].nonzero()
        scores[rows, cols] = -np.inf
        top = np.argpartition(-scores, min(k, n - 1) - 1, axis=1)[:, :k]
        for i, u in enumerate(q):
            relevant = held_adj.indices[held_adj.indptr[u]:held_adj.indptr[u + 1]]
            recalls.append(np.isin(relevant, top[i]).sum() / len(relevant))
    return float(np.mean(recalls))


@dataclass(frozen=True)
class GateDecision:
    accept: bool
    candidate: float
    active: float
    margin: float
    reason: str


def gate(*, candidate: float, active: float, margin: float, metric: str = "recall@20") -> GateDecision:
    """Accept when the candidate is not worse than the active model by more than ``margin``."""
    if not np.isfinite(candidate):
        return GateDecision(False, candidate, active, margin, f"the candidate's {metric} could not be measured")
    if not np.isfinite(active) or candidate >= active - margin:
        return GateDecision(True, candidate, active, margin,
                            f"{metric} {candidate:.4f} vs active {active:.4f} (allowed drop {margin:.4f})")
    return GateDecision(False, candidate, active, margin,
                        f"{metric} {candidate:.4f} is worse than the active {active:.4f} by more than {margin:.4f}")


# --- incremental updates --------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledPairs:
    """Pairs (row of u, row of v) with labels in [0, 1] and their pair features."""

    u: np.ndarray
    v: np.ndarray
    pair_features: np.ndarray
    labels: np.ndarray


def finetune_head(
    model: RALM, inputs: UserInputs, pairs: LabelledPairs, *, lr: float = 1e-3, epochs: int = 3,
    last_tower_layers: bool = False, batch: int = 512, seed: int = 0,
) -> dict[str, float]:
    """Fine-tune the ranking head (and, optionally, the towers' output layers) on new labels.

    Every other parameter is frozen, so the retrieval embeddings do not move unless asked; the
    scaler buffers of the head stay as fitted at the last full training.
    """
    torch.manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = list(model.ranker.parameters())
    if last_tower_layers:
        for tower in {id(model.seed_tower): model.seed_tower, id(model.target_tower): model.target_tower}.values():
            last = _last_linear(tower)
            trainable += list(last.parameters())
    for p in trainable:
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(trainable, lr=lr)
    labels = torch.from_numpy(pairs.labels.astype(np.float32))
    features = torch.from_numpy(pairs.pair_features.astype(np.float32))
    rng = np.random.default_rng(seed)
    losses = []
    model.train()
    model.seed_tower.eval()  # batch-norm statistics of the towers stay as they were
    model.target_tower.eval()
    for _ in range(epochs):
        order = rng.permutation(len(labels))
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            seed_x = model.seed_embed(inputs.batch(pairs.u[rows], model.config))
            target_x = model.target_embed(inputs.batch(pairs.v[rows], model.config))
            logits = model.rank(seed_x, target_x, features[rows])
            loss = F.binary_cross_entropy_with_logits(logits, labels[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return {"incremental_pairs": float(len(labels)), "incremental_loss": float(np.mean(losses[-max(1, len(losses) // epochs):]))}


def _last_linear(tower: torch.nn.Module) -> torch.nn.Linear:
    last = None
    for module in tower.modules():
        if isinstance(module, torch.nn.Linear):
            last = module
    if last is None:
        raise ValueError("the tower has no linear layer")
    return last


# --- distillation and quantisation ----------------------------------------------------------


def student_config(teacher: ModelConfig) -> ModelConfig:
    """A student with the teacher's token width and half its DNN and head widths: the dense
    layers shrink to about a quarter, and the field and id-embedding tables keep their shapes,
    so the student can start from the teacher's (``student_from``)."""
    return replace(teacher, dnn_hidden=tuple(max(16, h // 2) for h in teacher.dnn_hidden),
                   rank_hidden=tuple(max(8, h // 2) for h in teacher.rank_hidden))


def student_from(teacher: RALM) -> RALM:
    """A student initialised with every teacher tensor of the same name and shape (embedding
    tables, field projections, attention): distillation then only has to fit the smaller DNN."""
    student = RALM(student_config(teacher.config))
    mine = student.state_dict()
    shared = {k: v for k, v in teacher.state_dict().items() if k in mine and mine[k].shape == v.shape}
    mine.update(shared)
    student.load_state_dict(mine)
    return student


def distill(
    teacher: RALM, student: RALM, inputs: UserInputs, positives: np.ndarray, *, epochs: int = 5,
    temperature: float = 2.0, soft_weight: float = 0.7, batch: int = 512, lr: float = 3e-3, seed: int = 0,
) -> dict[str, float]:
    """Train ``student``'s towers from ``teacher`` (Hinton et al.): on each batch of positive pairs,
    ``soft_weight * T^2 * KL(softmax(teacher logits / T) || softmax(student logits / T))`` over the
    in-batch similarity matrix, plus ``(1 - soft_weight)`` times the hard in-batch softmax loss.
    Then the student's ranking head copies the teacher's scaler and learns the teacher's head
    outputs on the same pairs (soft labels)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    teacher.eval()
    cfg_t, cfg_s = teacher.config, student.config
    optimiser = torch.optim.Adam([p for n, p in student.named_parameters() if not n.startswith("ranker.")], lr=lr)
    losses = []
    for _ in range(epochs):
        student.train()
        order = rng.permutation(len(positives))
        for start in range(0, len(order) - 1, batch):
            rows = positives[order[start:start + batch]]
            if len(rows) < 2:
                continue
            u, v = rows[:, 0], rows[:, 1]
            with torch.no_grad():
                t_logits = teacher.similarity_logits(teacher.seed_embed(inputs.batch(u, cfg_t)),
                                                     teacher.target_embed(inputs.batch(v, cfg_t)))
            s_seed, s_target = student.seed_embed(inputs.batch(u, cfg_s)), student.target_embed(inputs.batch(v, cfg_s))
            s_logits = student.similarity_logits(s_seed, s_target)
            soft = F.kl_div(F.log_softmax(s_logits / temperature, dim=1), F.log_softmax(t_logits / temperature, dim=1),
                            log_target=True, reduction="batchmean") * temperature ** 2
            hard = listwise_loss(s_seed, s_target, None, cfg_s.temperature)
            loss = soft_weight * soft + (1 - soft_weight) * hard
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 5.0)
            optimiser.step()
            losses.append(float(loss))
    student.eval()
    return {"distill_loss": float(np.mean(losses[-10:])) if losses else float("nan")}


def distill_head(teacher: RALM, student: RALM, inputs: UserInputs, pairs: LabelledPairs, *, epochs: int = 5,
                 lr: float = 3e-3, seed: int = 0) -> dict[str, float]:
    """The student's head learns sigmoid(teacher head logits) on ``pairs`` (towers frozen)."""
    student.ranker.pair_mean.copy_(teacher.ranker.pair_mean)
    student.ranker.pair_std.copy_(teacher.ranker.pair_std)
    with torch.no_grad():
        soft = torch.sigmoid(teacher.rank(teacher.seed_embed(inputs.batch(pairs.u, teacher.config)),
                                          teacher.target_embed(inputs.batch(pairs.v, teacher.config)),
                                          torch.from_numpy(pairs.pair_features.astype(np.float32)))).numpy()
    return finetune_head(student, inputs, replace(pairs, labels=soft), lr=lr, epochs=epochs, seed=seed)


def quantise(model: RALM) -> RALM:
    """Dynamic int8 quantisation of the dense layers (weights int8, activations quantised on the
    fly): the DNN blocks, attention projections and ranking head, which are most of the CPU time.
    The per-field input projections stay float: the tower fuses them into one block-diagonal
    matmul that reads their weights directly."""
    import warnings

    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    spec = {name: default_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".dense." not in f".{name}."}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization's notice of a move
        return quantize_dynamic(copy.deepcopy(model).eval(), spec, dtype=torch.qint8)


def model_size_bytes(model: torch.nn.Module) -> int:
    out = io.BytesIO()
    torch.save(model.state_dict(), out)
    return out.tell()


def inference_users_per_second(model: RALM, inputs: UserInputs, *, users: int = 20_000, repeats: int = 3) -> float:
    """Median target-tower throughput over ``repeats`` passes of ``users`` people, batch 4096."""
    rows = np.arange(min(users, inputs.n_users))
    rates = []
    with torch.no_grad():
        model.eval()
        for _ in range(repeats):
            started = time.perf_counter()
            for start in range(0, len(rows), 4096):
                model.target_embed(inputs.batch(rows[start:start + 4096], model.config))
            rates.append(len(rows) / (time.perf_counter() - started))
    return float(np.median(rates))


def distill_student(
    teacher: RALM, inputs: UserInputs, positives: np.ndarray, featurizer: object, *, epochs: int = 8,
    seed: int = 0, head_pairs: int | None = None,
) -> RALM:
    """A student started from the teacher (``student_from``), its towers distilled on
    ``positives``, then its head on those pairs (at most ``head_pairs`` of them) and as many
    random ones, against the teacher's head."""
    rng = np.random.default_rng(seed)
    student = student_from(teacher)
    distill(teacher, student, inputs, positives, epochs=epochs, seed=seed)
    sample = positives
    if head_pairs is not None and len(positives) > head_pairs:
        sample = positives[rng.choice(len(positives), head_pairs, replace=False)]
    u = np.r_[sample[:, 0], sample[:, 0]]
    v = np.r_[sample[:, 1], rng.integers(0, inputs.n_users, len(sample))]
    pairs = LabelledPairs(u, v, featurizer.for_pairs(u, v), np.zeros(len(u), np.float32))  # type: ignore[attr-defined]
    distill_head(teacher, student, inputs, pairs, epochs=epochs, seed=seed)
    return student


# --- the side-by-side report ----------------------------------------------------------------


def pair_auc(model: RALM, inputs: UserInputs, featurizer: object, positives: np.ndarray, rng: np.random.Generator) -> float:
    """AUC of the ranking head: held-out pairs against as many random pairs."""
    from matching.ml.train import roc_auc

    n = inputs.n_users
    negatives = np.column_stack([positives[:, 0], rng.integers(0, n, len(positives))])
    pairs = np.concatenate([positives, negatives])
    labels = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    features = featurizer.for_pairs(pairs[:, 0], pairs[:, 1])  # type: ignore[attr-defined]
    with torch.no_grad():
        scores = model.rank(model.seed_embed(inputs.batch(pairs[:, 0], model.config)),
                            model.target_embed(inputs.batch(pairs[:, 1], model.config)),
                            torch.from_numpy(features.astype(np.float32))).numpy()
    return roc_auc(scores, labels)


def compression_report(
    teacher: RALM, inputs: UserInputs, featurizer: object, known: np.ndarray, held_out: np.ndarray, *,
    student_epochs: int = 8, seed: int = 0, log=lambda _m: None,  # type: ignore[no-untyped-def]
) -> dict[str, dict[str, float]]:
    """Teacher, distilled student and both quantised, side by side: size, speed, quality.

    Quality is measured on ``held_out`` pairs none of them trained on: retrieval recall@20 with
    the ``known`` graph as input, and the ranking head's AUC against random pairs.
    """
    torch.manual_seed(seed)
    log("distilling the student")
    student = distill_student(teacher, inputs, known, featurizer, epochs=student_epochs, seed=seed, head_pairs=20_000)
    models = {"teacher": teacher, "student": student, "teacher_int8": quantise(teacher), "student_int8": quantise(student)}
    report: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        log(f"measuring {name}")
        report[name] = {
            "size_mb": model_size_bytes(model) / 2**20,
            "users_per_second": inference_users_per_second(model, inputs),
            "recall@20": retrieval_recall(model, inputs, known, held_out, k=20, seed=seed),
            "pair_auc": pair_auc(model, inputs, featurizer, held_out, np.random.default_rng(seed + 1)),
        }
    return report
