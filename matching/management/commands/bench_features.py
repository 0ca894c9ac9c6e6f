"""``manage.py bench_features --users N [--repeat 3] [--json FILE]``: time user features.

Measures the two ways features are made, on whatever the database holds (fill a throwaway
database with ``generate_city`` first, see docs/BENCHMARKS.md):

1. Batch: ``load_city()`` then ``user_features(city, now)``, ``--repeat`` times; the median
   is reported, split into loading (per SQL query) and numpy (per feature group). With
   ``--users N`` below the number of people, the batch is the first N users by id, loaded through
   ``load_city(ids)`` (the ``= ANY`` filters of the online path, friendships and events kept only
   among those N); at or above it, every user through ``load_city()``.
2. Online: for ``--sample`` people drawn at random (``--seed``) from the same users, what
   ``matching.services.features.user_features_online`` does: ``circle_of(id)``, ``load_city`` of
   that circle, ``user_features``, and the person's row. A few untimed calls warm the connection
   and the query plans first; the report gives p50, p95 and p99 milliseconds.
3. Memory: the process's peak resident set size (``ru_maxrss``, MiB) after the batch runs, which
   includes the interpreter and Django (reported on its own as ``baseline_rss_mb``); the peak
   after each run is listed too (later runs can add allocator fragmentation left by earlier ones).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import resource
import statistics
import time
from argparse import ArgumentParser, ArgumentTypeError
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from matching.feature_store import circle_of, load_city
from matching.ml.features import SCHEMA, user_features

NO_USERS = "the database has no users: fill it with generate_city first (see docs/BENCHMARKS.md)"
BAD_NOW = "--now must be a date or time in ISO 8601, for example 2026-01-01"
WARMUP_CALLS = 5


def _now(value: str) -> float:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ArgumentTypeError(BAD_NOW) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _median_split(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: round(statistics.median(run.get(name, 0.0) for run in runs), 3) for name in runs[0]}


class Command(BaseCommand):
    help = (
        "Time batch features (load_city + user_features) for N users and online features for a "
        "random sample of them; report median seconds, the split by query and feature group, "
        "online p50/p95/p99 milliseconds and peak memory."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--users", type=int,
            help="the first N users by id (default: all; N at or above the count means all)",
        )
        parser.add_argument("--repeat", type=int, default=3, help="batch runs (default 3)")
        parser.add_argument(
            "--sample", type=int, default=200, help="people timed on the online path (default 200)"
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of the online sample")
        parser.add_argument(
            "--now", type=_now, default=_now("2026-01-01"), metavar="ISO",
            help="reference time of the features (default 2026-01-01, generate_city's --now)",
        )
        parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report to FILE")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["repeat"] < 1 or options["sample"] < 1:
            raise CommandError("--repeat and --sample must be at least 1")
        baseline_rss_mb = _peak_rss_mb()
        now: float = options["now"]
        ids, everyone = self._users(options["users"])

        batch = [self._batch(ids, everyone, now) for _ in range(options["repeat"])]
        peak_rss_mb = _peak_rss_mb()
        online = self._online(ids, options["sample"], options["seed"], now)

        totals = [run["seconds"] for run in batch]
        report: dict[str, Any] = {
            "users": len(ids),
            "all_users": everyone,
            "now": dt.datetime.fromtimestamp(now, tz=dt.UTC).isoformat(),
            "batch_seconds": round(statistics.median(totals), 3),
            "batch_runs_seconds": [round(t, 3) for t in totals],
            "batch_runs_peak_rss_mb": [round(run["peak_rss_mb"], 1) for run in batch],
            "load_seconds": round(statistics.median(run["load"] for run in batch), 3),
            "features_seconds": round(statistics.median(run["features"] for run in batch), 3),
            "load_split_seconds": _median_split([run["load_split"] for run in batch]),
            "features_split_seconds": _median_split([run["features_split"] for run in batch]),
            "online_p50_ms": online["p50"],
            "online_p95_ms": online["p95"],
            "online_p99_ms": online["p99"],
            "online_split_p50_ms": online["split"],
            "online_sample": options["sample"],
            "online_median_circle": online["median_circle"],
            "peak_rss_mb": round(peak_rss_mb, 1),
            "baseline_rss_mb": round(baseline_rss_mb, 1),
        }
        self._print(report)
        if options["json"]:
            options["json"].write_text(json.dumps(report, indent=2) + "\n")

    def _users(self, limit: int | None) -> tuple[np.ndarray, bool]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM users_user")
            count = int(cursor.fetchone()[0])
            if count == 0:
                raise CommandError(NO_USERS)
            everyone = limit is None or limit >= count
            cursor.execute("SELECT id FROM users_user ORDER BY id LIMIT %s", [count if everyone else limit])
            return np.array([row[0] for row in cursor.fetchall()], dtype=np.int64), everyone

    def _batch(self, ids: np.ndarray, everyone: bool, now: float) -> dict[str, Any]:
        gc.collect()
        load_split: dict[str, float] = {}
        features_split: dict[str, float] = {}
        started = time.perf_counter()
        city = load_city(timings=load_split) if everyone else load_city(ids.tolist(), timings=load_split)
        loaded = time.perf_counter()
        features = user_features(city, now, timings=features_split)
        finished = time.perf_counter()
        if features.shape != (len(ids), SCHEMA.dim) or not np.isfinite(features).all():
            raise CommandError(f"batch features have shape {features.shape} or non-finite values")
        del city, features
        return {
            "seconds": finished - started, "load": loaded - started, "features": finished - loaded,
            "load_split": load_split, "features_split": features_split, "peak_rss_mb": _peak_rss_mb(),
        }

    def _online(self, ids: np.ndarray, sample: int, seed: int, now: float) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        people = rng.choice(ids, size=min(sample, len(ids)), replace=False)
        for person in people[:WARMUP_CALLS]:
            self._one(int(person), now)
        runs = [self._one(int(person), now) for person in people]
        totals = np.array([run["total"] for run in runs]) * 1000.0
        split = {
            name: round(float(np.median([run[name] for run in runs])) * 1000.0, 2)
            for name in ("circle_of", "load_city", "user_features")
        }
        return {
            "p50": round(float(np.percentile(totals, 50)), 2),
            "p95": round(float(np.percentile(totals, 95)), 2),
            "p99": round(float(np.percentile(totals, 99)), 2),
            "split": split,
            "median_circle": float(np.median([run["circle"] for run in runs])),
        }

    def _one(self, person: int, now: float) -> dict[str, float]:
        """The steps of ``user_features_online``, each timed."""
        started = time.perf_counter()
        circle = circle_of(person)
        found = time.perf_counter()
        city = load_city(circle)
        loaded = time.perf_counter()
        row = int(np.searchsorted(city.user_ids, person))
        vector = user_features(city, now)[row]
        finished = time.perf_counter()
        if city.user_ids[row] != person or not np.isfinite(vector).all():
            raise CommandError(f"online features of user {person} are missing or not finite")
        return {
            "total": finished - started, "circle_of": found - started, "load_city": loaded - found,
            "user_features": finished - loaded, "circle": float(len(circle)),
        }

    def _print(self, report: dict[str, Any]) -> None:
        who = "all" if report["all_users"] else "the first (by id)"
        runs = ", ".join(f"{t:.1f}" for t in report["batch_runs_seconds"])
        self.stdout.write(
            f"batch, {who} {report['users']:,} users: median {report['batch_seconds']:.1f} s "
            f"(runs {runs}); loading {report['load_seconds']:.1f} s, "
            f"features {report['features_seconds']:.1f} s"
        )
        for title, split in (("  loading", report["load_split_seconds"]),
                             ("  features", report["features_split_seconds"])):
            self.stdout.write(title + ": " + ", ".join(f"{k} {v:.2f}" for k, v in split.items()))
        split = report["online_split_p50_ms"]
        self.stdout.write(
            f"online, {report['online_sample']} people (median circle {report['online_median_circle']:.0f}): "
            f"p50 {report['online_p50_ms']:.1f} ms, p95 {report['online_p95_ms']:.1f} ms, "
            f"p99 {report['online_p99_ms']:.1f} ms; medians: "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in split.items())
        )
        after = ", ".join(f"{mb:,.0f}" for mb in report["batch_runs_peak_rss_mb"])
        self.stdout.write(
            f"peak RSS {report['peak_rss_mb']:,.0f} MB (after each run: {after}; "
            f"{report['baseline_rss_mb']:,.0f} MB before loading anything)"
        )
