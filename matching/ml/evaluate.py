"""Offline evaluation on a real LBSN dataset: the model against simple baselines.

``evaluate(directory, ...)`` follows these steps, in memory, with the feature, model and
ranking code that serving uses:

1. Read the dataset; hold out friendship pairs (those of ``test_edges`` when given, else a seeded
   random ``holdout`` share).
2. Build every feature from the remaining friendships and the train/tune visits only: a held-out
   pair contributes nothing, not even to mutual-friend counts.
3. Train (towers, then ranking head).
4. For every user with a held-out friend, rank all other users (themself and known friends
   excluded) by each method and report Recall@K, NDCG@K and per-user AUC, averaged over users:
   ``pipeline`` (retrieval channels + ranking head), ``two_tower`` (seed . target embeddings),
   ``lookalike`` (seed-set attention with the user's friends, or the user alone, as seeds), and
   the baselines ``random``, ``popularity`` (friend count), ``distance``, ``interest_cosine``
   (preference features), ``venue_adamic_adar`` and ``friend_adamic_adar``. Ties are broken by
   a seeded random jitter, the same for every method.
5. Seed 000's classification metrics (accuracy, precision, recall, F1, AUC at P >= 0.5) of the
   ranking head on held-out pairs against as many random non-friend pairs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from matching.lbsn import LbsnDataset, read_lbsn, unique_friend_pairs
from matching.ml import calibration
from matching.ml.features import SCHEMA, adjacency, user_features
from matching.ml.inputs import UserInputs
from matching.ml.lbsn_data import city_from_lbsn, dataset_now
from matching.ml.model import ModelConfig, default_model_config
from matching.ml.pairs import PairFeaturizer, adamic_adar_weights
from matching.ml.retrieval import Retriever
from matching.ml.train import (
    RankingExamples,
    TrainConfig,
    TrainingData,
    TrainResult,
    embed_users,
    rank_logits,
    ranking_examples,
    roc_auc,
    train,
)

METHODS = (
    "pipeline", "two_tower", "lookalike", "random", "popularity", "distance", "interest_cosine",
    "venue_adamic_adar", "friend_adamic_adar",
)
BASELINES = METHODS[3:]


@dataclass
class EvaluationResult:
    k: int
    queries: int
    seconds: float
    methods: dict[str, dict[str, float]]
    classification: dict[str, float]
    train_metrics: dict[str, float] = field(default_factory=dict)
    # Low-activity people (at most ``max_friends`` known friends): recall@k with and without the
    # cohort calibrator, over those people's queries only.
    cohort: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "methods": self.methods,
            "queries": self.queries,
            "seconds": self.seconds,
            "classification": self.classification,
            "train": self.train_metrics,
            "low_activity": self.cohort,
        }

    def table(self) -> str:
        k = self.k
        lines = [f"{'method':<20} {'recall@' + str(k):>10} {'ndcg@' + str(k):>10} {'auc':>8}"]
        for name in METHODS:
            m = self.methods[name]
            lines.append(f"{name:<20} {m[f'recall@{k}']:>10.4f} {m[f'ndcg@{k}']:>10.4f} {m['auc']:>8.4f}")
        best = max(BASELINES, key=lambda b: self.methods[b][f"recall@{k}"])
        best_recall = self.methods[best][f"recall@{k}"]
        ratio = self.methods["pipeline"][f"recall@{k}"] / best_recall if best_recall > 0 else math.inf
        lines.append(f"pipeline / best baseline ({best}) recall@{k}: {ratio:.3f}")
        c = self.classification
        lines.append(
            "classification (held-out pairs vs random pairs): "
            + ", ".join(f"{key} {c[key]:.4f}" for key in ("accuracy", "precision", "recall", "f1", "auc"))
        )
        if self.cohort:
            c = self.cohort
            lines.append(
                f"low-activity people (<= {c['max_friends']:.0f} known friends, {c['queries']:.0f} queries): "
                f"pipeline recall@{k} {c['pipeline']:.4f}, with cohort calibration {c['calibrated']:.4f}"
            )
        lines.append(f"{self.queries} query users, {self.seconds:.1f} s")
        return "\n".join(lines)


def read_test_edges(path: Path, n_users: int) -> np.ndarray:
    """Pairs "u v" (space or tab separated), one per line; a bad line names the file and line."""
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            u, v = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{path.name}, line {number}: expected two user ids, found {line.strip()!r}") from None
        if not (0 <= u < n_users and 0 <= v < n_users) or u == v:
            raise ValueError(f"{path.name}, line {number}: users must differ and lie in [0, {n_users})")
        pairs.append((u, v))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def split_edges(friends: np.ndarray, holdout: float, seed: int, test_edges: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    key = np.minimum(friends[:, 0], friends[:, 1]) * (1 << 32) + np.maximum(friends[:, 0], friends[:, 1])
    if test_edges is not None:
        test_key = np.minimum(test_edges[:, 0], test_edges[:, 1]) * (1 << 32) + np.maximum(test_edges[:, 0], test_edges[:, 1])
        held = np.isin(key, test_key)
        return friends[~held], test_edges
    rng = np.random.default_rng(seed)
    held = rng.random(len(friends)) < holdout
    return friends[~held], friends[held]


def ranking_metrics(scores: np.ndarray, relevant: sp.csr_matrix, excluded: sp.csr_matrix, k: int) -> dict[str, np.ndarray]:
    """Per-query Recall@k, NDCG@k and AUC of score rows against relevant columns."""
    scores = scores.copy()
    scores[excluded.nonzero()] = -np.inf
    q = scores.shape[0]
    rel = relevant.toarray().astype(bool)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
    hits = np.take_along_axis(rel, top, 1)
    n_rel = rel.sum(1)
    recall = hits.sum(1) / np.maximum(n_rel, 1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(1)
    ideal = np.array([discounts[:min(int(r), k)].sum() for r in n_rel])
    ndcg = np.divide(dcg, ideal, out=np.zeros(q), where=ideal > 0)
    auc = np.full(q, np.nan)
    ex = excluded.toarray().astype(bool)
    for i in range(q):
        candidates = ~ex[i]
        auc[i] = roc_auc(scores[i, candidates], rel[i, candidates])
    return {"recall": recall, "ndcg": ndcg, "auc": auc}


def _lookalike_scores(model, target_emb: np.ndarray, queries: np.ndarray, friends: sp.csr_matrix) -> np.ndarray:
    targets = torch.from_numpy(target_emb)
    out = np.zeros((len(queries), len(target_emb)), dtype=np.float64)
    with torch.no_grad():
        for i, u in enumerate(queries):
            seeds_rows = friends.indices[friends.indptr[u]:friends.indptr[u + 1]]
            if len(seeds_rows) == 0:
                seeds_rows = np.array([u])
            out[i] = model.lookalike(torch.from_numpy(target_emb[seeds_rows]), targets).numpy()
    return out


def evaluate(
    directory: Path | str,
    *,
    holdout: float = 0.2,
    seed: int = 0,
    k: int = 20,
    test_edges_file: Path | None = None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    cohort_max_friends: int = 3,
    log: Callable[[str], None] = lambda _msg: None,
) -> EvaluationResult:
    started = time.perf_counter()
    dataset: LbsnDataset = read_lbsn(directory)
    n = dataset.n_users
    friends = unique_friend_pairs(dataset)
    test_edges = read_test_edges(test_edges_file, n) if test_edges_file else None
    known, held_out = split_edges(friends, holdout, seed, test_edges)
    log(f"{n} users, {len(known)} known friendships, {len(held_out)} held out")

    # Step 2: features from known friendships and train/tune visits only.
    city = city_from_lbsn(dataset, friend_pairs=known, splits=("train", "tune"))
    now = dataset_now(dataset)
    features = user_features(city, now)
    mc = model_config or default_model_config(city.n_users, city.n_venues)
    tc = train_config or TrainConfig(seed=seed)
    inputs = UserInputs.build(city, features, mc)

    def build_featurizer(edges: np.ndarray) -> PairFeaturizer:
        sub = city_from_lbsn(dataset, friend_pairs=edges, splits=("train", "tune"))
        return PairFeaturizer(sub, user_features(sub, now))

    featurizer = PairFeaturizer(city, features)
    data = TrainingData(inputs=inputs, positives=known, pairs=featurizer, lon=city.lon, lat=city.lat, friend_edges=known)

    # Step 3.
    log("training")
    result: TrainResult = train(mc, tc, data, build_featurizer)
    model = result.model
    seed_emb, target_emb = embed_users(model, inputs)

    # Step 4.
    log("ranking")
    known_adj = adjacency(known[:, 0], known[:, 1], n)
    held_adj = adjacency(held_out[:, 0], held_out[:, 1], n)
    queries = np.flatnonzero(np.asarray(held_adj.sum(1)).ravel() > 0)
    eye = sp.identity(n, format="csr", dtype=np.float32)
    retriever = Retriever(known_adj, inputs.venues, city.lon, city.lat, seed_emb, target_emb, k=tc.retrieve_k)
    rng = np.random.default_rng(seed + 7)
    friend_aa = (known_adj @ sp.diags(adamic_adar_weights(np.asarray(known_adj.sum(0)).ravel()))).tocsr()
    venues = inputs.venues.copy()
    venues.data[:] = 1.0
    venue_aa = (venues @ sp.diags(adamic_adar_weights(np.asarray(venues.sum(0)).ravel()))).tocsr()
    pref = features[:, SCHEMA.group_slices()["preference"]].astype(np.float64)
    pref /= np.maximum(np.linalg.norm(pref, axis=1, keepdims=True), 1e-12)
    degree = np.asarray(known_adj.sum(1)).ravel()
    log("cohort calibration")
    calibrator = _fit_cohort_calibrator(model, inputs, city, known, build_featurizer, pref, tc, cohort_max_friends, seed)
    cohort_recall: dict[str, list[np.ndarray]] = {"pipeline": [], "calibrated": []}
    per_method: dict[str, dict[str, list[np.ndarray]]] = {m: {"recall": [], "ndcg": [], "auc": []} for m in METHODS}
    for start in range(0, len(queries), 256):
        qs = queries[start:start + 256]
        jitter = rng.random((len(qs), n)) * 1e-9
        excluded = (known_adj[qs] + eye[qs]).tocsr()
        relevant = held_adj[qs]
        candidates = retriever.retrieve(qs).users
        examples = ranking_examples(qs, candidates, featurizer)
        logits = rank_logits(model, seed_emb, target_emb, examples)
        pipeline = np.full((len(qs), n), -np.inf)
        row_of = {int(u): i for i, u in enumerate(qs)}
        pipeline[[row_of[int(u)] for u in examples.queries], examples.candidates] = logits
        dist = _sq_chord(city.lon, city.lat, qs)
        scores = {
            "pipeline": pipeline,
            "two_tower": seed_emb[qs] @ target_emb.T,
            "lookalike": _lookalike_scores(model, target_emb, qs, known_adj),
            "random": np.zeros((len(qs), n)),
            "popularity": np.broadcast_to(degree, (len(qs), n)).astype(np.float64),
            "distance": -dist,
            "interest_cosine": pref[qs] @ pref.T,
            "venue_adamic_adar": (venue_aa[qs] @ venues.T).toarray(),
            "friend_adamic_adar": (friend_aa[qs] @ known_adj.T).toarray(),
        }
        for name, s in scores.items():
            got = ranking_metrics(np.where(np.isfinite(s), s + jitter, s), relevant, excluded, k)
            for key, values in got.items():
                per_method[name][key].append(values)
        low = degree[qs] <= cohort_max_friends
        if calibrator is not None and low.any():
            in_low = low[[row_of[int(u)] for u in examples.queries]]
            x = cohort_features(examples.queries[in_low], examples.candidates[in_low], logits[in_low],
                                seed_emb, target_emb, degree, pref, city)
            calibrated = pipeline.copy()
            calibrated[[row_of[int(u)] for u in examples.queries[in_low]], examples.candidates[in_low]] = calibrator.score(x)
            for name, s in (("pipeline", pipeline), ("calibrated", calibrated)):
                got = ranking_metrics(np.where(np.isfinite(s[low]), s[low] + jitter[low], s[low]), relevant[low], excluded[low], k)
                cohort_recall[name].append(got["recall"])
    methods = {
        name: {
            f"recall@{k}": float(np.mean(np.concatenate(v["recall"]))),
            f"ndcg@{k}": float(np.mean(np.concatenate(v["ndcg"]))),
            "auc": float(np.nanmean(np.concatenate(v["auc"]))),
        }
        for name, v in per_method.items()
    }
    classification = _classification(model, seed_emb, target_emb, featurizer, held_out, known_adj, held_adj, rng)
    cohort = {}
    if cohort_recall["pipeline"]:
        cohort = {"max_friends": float(cohort_max_friends), "queries": float(len(np.concatenate(cohort_recall["pipeline"]))),
                  **{name: float(np.mean(np.concatenate(v))) for name, v in cohort_recall.items()}}
    return EvaluationResult(
        k=k, queries=int(len(queries)), seconds=time.perf_counter() - started,
        methods=methods, classification=classification, train_metrics=result.metrics, cohort=cohort,
    )


def cohort_features(queries: np.ndarray, candidates: np.ndarray, logits: np.ndarray, seed_emb: np.ndarray,
                    target_emb: np.ndarray, degree: np.ndarray, pref: np.ndarray, city: object) -> np.ndarray:
    cosine = (seed_emb[queries] * target_emb[candidates]).sum(1)
    interest = (pref[queries] * pref[candidates]).sum(1)
    lo, la = np.radians(np.nan_to_num(city.lon)), np.radians(np.nan_to_num(city.lat))  # type: ignore[attr-defined]
    xyz = np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])
    sq = ((xyz[queries] - xyz[candidates]) ** 2).sum(1)
    return calibration.pair_features(queries, candidates, logits, cosine, degree, interest, sq)


def _fit_cohort_calibrator(model, inputs, city, known, build_featurizer, pref, tc, max_friends, seed):  # type: ignore[no-untyped-def]
    """Fit the calibrator on the known graph only: hide a share of known friendships, retrieve and
    rank as the pipeline does with the rest, and learn, on low-activity queries, which candidates
    were the hidden friends. The evaluation's held-out pairs play no part."""
    rng = np.random.default_rng(seed + 11)
    keep = rng.random(len(known)) >= 0.2
    known2, found2 = known[keep], known[~keep]
    n = inputs.n_users
    adj2 = adjacency(known2[:, 0], known2[:, 1], n)
    find_adj = adjacency(found2[:, 0], found2[:, 1], n)
    degree2 = np.asarray(adj2.sum(1)).ravel()
    seed2, target2 = embed_users(model, inputs.with_friends(adj2))
    queries = np.flatnonzero((degree2 <= max_friends) & (np.diff(find_adj.indptr) > 0))
    if len(queries) < 5:
        return None
    retriever = Retriever(adj2, inputs.venues, city.lon, city.lat, seed2, target2, k=tc.retrieve_k)
    featurizer2 = build_featurizer(known2)
    examples = ranking_examples(queries, retriever.retrieve(queries).users, featurizer2)
    if not len(examples.queries):
        return None
    logits = rank_logits(model, seed2, target2, examples)
    x = cohort_features(examples.queries, examples.candidates, logits, seed2, target2, degree2, pref, city)
    y = np.asarray(find_adj[examples.queries, examples.candidates]).ravel() > 0
    if y.sum() < 3:
        return None
    return calibration.fit(x, y.astype(np.float64))


def _sq_chord(lon: np.ndarray, lat: np.ndarray, rows: np.ndarray) -> np.ndarray:
    known = np.isfinite(lon) & np.isfinite(lat)
    lo, la = np.radians(np.nan_to_num(lon)), np.radians(np.nan_to_num(lat))
    xyz = np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])
    d = ((xyz[rows][:, None, :] - xyz[None, :, :]) ** 2).sum(-1)
    d[:, ~known] = 10.0
    d[~known[rows]] = 10.0
    return d


def _classification(model, seed_emb, target_emb, featurizer, held_out, known_adj, held_adj, rng) -> dict[str, float]:
    n = known_adj.shape[0]
    pos = held_out
    negs = []
    linked = (known_adj + held_adj).tocsr()
    while len(negs) < len(pos):
        u, v = rng.integers(0, n, size=2)
        if u != v and linked[u, v] == 0:
            negs.append((u, v))
    pairs = np.concatenate([pos, np.array(negs, dtype=np.int64).reshape(-1, 2)])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(negs))])
    feats = featurizer.for_pairs(pairs[:, 0], pairs[:, 1])
    ex = RankingExamples(pairs[:, 0], pairs[:, 1], feats, labels.astype(np.float32))
    prob = 1.0 / (1.0 + np.exp(-rank_logits(model, seed_emb, target_emb, ex)))
    pred = prob >= 0.5
    tp = float((pred & (labels == 1)).sum())
    fp = float((pred & (labels == 0)).sum())
    fn = float((~pred & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": float((pred == (labels == 1)).mean()) if len(labels) else math.nan,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "auc": roc_auc(prob, labels),
    }
