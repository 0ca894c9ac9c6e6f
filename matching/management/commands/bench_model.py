"""``manage.py bench_model [--users N] [--json FILE]``: training and inference speed of the towers.

No database: the command synthesizes ``N`` users whose inputs have the shapes of real ones, builds
the model of ``default_model_config`` for them, and times three things, each repeated
``--repeat`` times (the median is reported, with min and max):

1. ``train_pairs_per_second``: listwise training steps at the default ``TrainConfig`` batch size,
   through ``train.tower_train_step``, the function ``train_towers`` runs for every batch:
   building both sides' inputs with ``UserInputs.batch`` (bag dropout, each pair's members hidden
   from each other's friend bags), forward through both towers, the in-batch softmax loss with
   the log-Q correction, backward, gradient clipping and the Adam step. Batches are drawn from the
   friendships as an epoch draws them (positives of very popular people down-sampled, shuffled).
2. ``inference_users_per_second``: the target tower alone in eval mode under
   ``torch.inference_mode``, over all N users in batches of ``--batch`` rows whose inputs were
   built beforehand; ``inference_with_inputs_users_per_second`` also builds each batch's inputs,
   as ``embed_users`` does.
3. ``dense_only_users_per_second``: the tower's DNN block (Linear, BatchNorm, ReLU, Dropout;
   128-256-128) alone on (batch, fields x token width) inputs: a reference for how much of the
   tower the attention layers and the embeddings cost.

Synthetic shapes follow yelp-small (``../shared/data/lbsn/yelp-small``, 1,000 real users): a
venue bag per user of median 16 and mean 26 members (log-normal), friend degrees of median 3 and
mean 11 with 24% of people friendless (a log-normal configuration graph), 124 feature columns of
which about a quarter are non-zero, and ``max(5000, N / 40)`` venues (yelp-small has 5,255 for
1,000 users; generate_city 25,000 for 1,000,000). ``--lbsn DIR`` reads a real dataset instead
(inference then tiles its users up to N rows).

The machine is shared: the load average before and after each part goes into the output, so a
figure measured next to someone else's job can be recognised as such.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from django.core.management.base import BaseCommand, CommandError, CommandParser

from matching.ml.features import SCHEMA
from matching.ml.inputs import UserInputs, cell_buckets
from matching.ml.model import RALM, ModelConfig, TowerInput, default_model_config
from matching.ml.train import TrainConfig, directed, downsample_popular, tower_optimizer, tower_train_step

GOALS = {
    "train_pairs_per_second": 20_000.0,
    "inference_users_per_second": 200_000.0,
}
FRIENDLESS_SHARE = 0.24  # yelp-small: 239 of 1,000 users have no friend
MAX_BAG = 600  # yelp-small's largest venue bag is 577, its largest degree 458


class Command(BaseCommand):
    help = (
        "Time tower training (pairs/s, listwise, default batch size) and target-tower inference "
        "(users/s) on synthetic users of realistic shape; no database needed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=100_000, help="synthetic users (default 100000)")
        parser.add_argument("--repeat", type=int, default=5, help="repetitions of each measurement (default 5)")
        parser.add_argument("--steps", type=int, default=20, help="training steps per repetition (default 20)")
        parser.add_argument("--batch", type=int, default=8192, help="inference batch size (default 8192)")
        parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, the core count)")
        parser.add_argument("--lbsn", type=Path, help="use this LBSN dataset directory instead of synthetic users")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--skip-train", action="store_true", help="time inference only")
        parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure to FILE")

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("users", "repeat", "steps", "batch"):
            if options[name] < 1:
                raise CommandError(f"--{name} must be at least 1")
        if options["threads"] is not None:
            if options["threads"] < 1:
                raise CommandError("--threads must be at least 1")
            torch.set_num_threads(options["threads"])
        torch.manual_seed(options["seed"])
        rng = np.random.default_rng(options["seed"])
        if options["lbsn"]:
            inputs, config, edges = _lbsn_inputs(options["lbsn"])
        else:
            inputs, config, edges = synthetic_inputs(options["users"], rng)
        results: dict[str, Any] = {"machine": _machine(), "model_config": config.to_dict()}
        results["data"] = {
            "source": str(options["lbsn"]) if options["lbsn"] else "synthetic",
            "users": inputs.n_users,
            "venues": inputs.venues.shape[1],
            "friendships": len(edges),
            "mean_venue_bag": float(np.diff(inputs.venues.indptr).mean()),
            "mean_friend_bag": float(np.diff(inputs.friends.indptr).mean()),
        }
        model = RALM(config)
        if not options["skip_train"]:
            trainer = _Trainer(model, inputs, edges, rng)
            results["train"] = self._time(
                "train_pairs_per_second", options["repeat"], lambda: trainer.rate(options["steps"]),
            )
        rows = np.resize(np.arange(inputs.n_users), options["users"])
        batches = [rows[s:s + options["batch"]] for s in range(0, len(rows), options["batch"])]
        results["inference"] = self._time(
            "inference_users_per_second", options["repeat"],
            lambda: _inference_rate(model, inputs, batches, prebuilt=True),
        )
        results["inference_with_inputs"] = self._time(
            "inference_with_inputs_users_per_second", options["repeat"],
            lambda: _inference_rate(model, inputs, batches, prebuilt=False),
        )
        results["dense_only"] = self._time(
            "dense_only_users_per_second", options["repeat"],
            lambda: _dense_rate(model, len(rows), options["batch"]),
        )
        for part in ("train", "inference", "inference_with_inputs", "dense_only"):
            if part in results:
                results[results[part]["name"]] = results[part]["median"]
        self._table(results)
        if options["json"]:
            options["json"].parent.mkdir(parents=True, exist_ok=True)
            options["json"].write_text(json.dumps(results, indent=2) + "\n")

    def _time(self, name: str, repeat: int, measure) -> dict[str, Any]:
        load_before = os.getloadavg()[0]
        measure()  # warm-up: allocator, thread pool, first-call dispatch
        runs = [measure() for _ in range(repeat)]
        part = {
            "name": name,
            "median": statistics.median(runs),
            "min": min(runs),
            "max": max(runs),
            "runs": runs,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
        }
        self.stderr.write(f"{name}: median {part['median']:,.0f} (min {part['min']:,.0f}, max {part['max']:,.0f})")
        return part

    def _table(self, results: dict[str, Any]) -> None:
        self.stdout.write("| measure | goal | median | min | max | load avg |")
        self.stdout.write("| --- | ---: | ---: | ---: | ---: | ---: |")
        for part in ("train", "inference", "inference_with_inputs", "dense_only"):
            if part not in results:
                continue
            r = results[part]
            goal = GOALS.get(r["name"])
            goal_text = f">= {goal:,.0f}" if goal else "(reference)"
            verdict = "" if goal is None else (" (met)" if r["median"] >= goal else " (missed)")
            self.stdout.write(
                f"| {r['name']} | {goal_text} | {r['median']:,.0f}{verdict} | {r['min']:,.0f} | {r['max']:,.0f} | "
                f"{r['load_average_before']:.1f} to {r['load_average_after']:.1f} |"
            )
        m = results["machine"]
        self.stdout.write(
            f"{results['data']['users']:,} users ({results['data']['source']}), torch {m['torch']}, "
            f"{m['torch_threads']} threads, {m['nproc']} cores ({m['cpu']})"
        )


# ------------------------------------------------------------------------------------------------
# inputs


def synthetic_inputs(n: int, rng: np.random.Generator) -> tuple[UserInputs, ModelConfig, np.ndarray]:
    """``n`` users with yelp-small's shapes: (inputs, model config, undirected friendships (E, 2))."""
    m = max(5_000, n // 40)
    config = default_model_config(n, m)
    features = (rng.random((n, SCHEMA.dim), dtype=np.float32) * (rng.random((n, SCHEMA.dim)) < 0.27)).astype(np.float32)
    # Venue bags: log-normal sizes (median 16, mean 26), weights normalised per user.
    sizes = np.clip(np.round(rng.lognormal(np.log(16.0), 1.0, n)), 1, min(MAX_BAG, m)).astype(np.int64)
    owners = np.repeat(np.arange(n), sizes)
    venues = sp.csr_matrix((rng.random(len(owners)).astype(np.float32) + 0.1, (owners, rng.integers(0, m, len(owners)))), shape=(n, m))
    venues.sum_duplicates()
    totals = np.asarray(venues.sum(axis=1)).ravel()
    venues = (sp.diags(1.0 / np.maximum(totals, 1e-12)) @ venues).tocsr().astype(np.float32)
    # Friendships: a configuration graph over log-normal degrees (median 6 among those with friends).
    degree = np.clip(np.round(rng.lognormal(np.log(6.0), 1.35, n)), 1, min(MAX_BAG, n - 1)).astype(np.int64)
    degree[rng.random(n) < FRIENDLESS_SHARE] = 0
    stubs = rng.permutation(np.repeat(np.arange(n), degree))
    pairs = stubs[: len(stubs) // 2 * 2].reshape(-1, 2)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    low, high = pairs.min(axis=1), pairs.max(axis=1)
    keys = np.unique(low * n + high)
    edges = np.column_stack([keys // n, keys % n])
    both = directed(edges)
    friends = sp.csr_matrix((np.ones(len(both), dtype=np.float32), (both[:, 0], both[:, 1])), shape=(n, n))
    # Locations spread over a 50 km square, so cells hash to many buckets as in a city.
    lat = 52.0 + rng.random(n) * 0.45
    lon = 13.0 + rng.random(n) * 0.7
    inputs = UserInputs(
        features=features, venues=venues, friends=friends, cells=cell_buckets(lat, lon, config.cell_buckets),
        venue_keys=np.arange(m, dtype=np.int64), user_keys=np.arange(n, dtype=np.int64),
    )
    return inputs, config, edges


def _lbsn_inputs(directory: Path) -> tuple[UserInputs, ModelConfig, np.ndarray]:
    from matching.lbsn import LbsnFormatError, read_lbsn, unique_friend_pairs
    from matching.ml.features import user_features
    from matching.ml.lbsn_data import city_from_lbsn, dataset_now

    try:
        dataset = read_lbsn(directory)
    except (LbsnFormatError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from exc
    city = city_from_lbsn(dataset, splits=("train", "tune"))
    config = default_model_config(city.n_users, city.n_venues)
    inputs = UserInputs.build(city, user_features(city, dataset_now(dataset)), config)
    return inputs, config, unique_friend_pairs(dataset)


# ------------------------------------------------------------------------------------------------
# the measurements


class _Trainer:
    """Listwise training steps as ``train_towers`` takes them, one optimizer for all repetitions."""

    def __init__(self, model: RALM, inputs: UserInputs, edges: np.ndarray, rng: np.random.Generator) -> None:
        self.model, self.inputs, self.rng = model, inputs, rng
        self.config = TrainConfig()
        self.pairs = directed(edges)
        degree = np.bincount(self.pairs[:, 1], minlength=inputs.n_users).astype(np.float64)
        self.degree = degree
        self.log_q_all = np.log((degree + 1.0) / (degree + 1.0).sum()).astype(np.float32)
        self.optimizer = tower_optimizer(model, self.config)
        self.queue = np.zeros((0, 2), dtype=np.int64)

    def rate(self, steps: int) -> float:
        """Pairs per second over ``steps`` full batches.

        Batches come from epochs drawn as ``train_towers`` draws them: positives of very popular
        people down-sampled, then shuffled. (Without the down-sampling, batches would be full of
        the most-connected people and their long friend and venue bags.)
        """
        size = self.config.batch_size
        while len(self.queue) < steps * size:
            epoch = downsample_popular(self.pairs, self.inputs.n_users, self.config.popular_positive_threshold, self.rng)
            self.queue = np.concatenate([self.queue, epoch[self.rng.permutation(len(epoch))]])
        self.model.train()
        started = time.perf_counter()
        for step in range(steps):
            batch = self.queue[step * size:(step + 1) * size]
            tower_train_step(
                self.model, self.optimizer, self.config, self.inputs, batch, self.degree, self.log_q_all,
                self.rng, lr=self.config.lr,
            )
        seconds = time.perf_counter() - started
        self.queue = self.queue[steps * size:]
        return steps * size / seconds


def _inference_rate(model: RALM, inputs: UserInputs, batches: list[np.ndarray], *, prebuilt: bool) -> float:
    tower = model.target_tower.eval()
    config = model.config
    with torch.inference_mode():
        built: list[TowerInput] = [inputs.batch(rows, config) for rows in batches] if prebuilt else []
        started = time.perf_counter()
        for i, rows in enumerate(batches):
            tower(built[i] if prebuilt else inputs.batch(rows, config))
        seconds = time.perf_counter() - started
    return sum(len(rows) for rows in batches) / seconds


def _dense_rate(model: RALM, users: int, batch: int) -> float:
    tower = model.target_tower.eval()
    width = tower.config.n_fields * tower.config.token_dim
    x = torch.randn(min(batch, users), width)
    rounds = max(1, users // len(x))
    with torch.inference_mode():
        started = time.perf_counter()
        for _ in range(rounds):
            tower.dnn(x)
        seconds = time.perf_counter() - started
    return rounds * len(x) / seconds


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), cpu)
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
