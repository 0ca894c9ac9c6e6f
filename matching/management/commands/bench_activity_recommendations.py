"""``manage.py bench_activity_recommendations --users 1000000 --activities 10 --repeat 3``.

Times what the Celery task runs, ``activity_recommendations_compute``, for activities of a
generated city: candidate SQL (radius, interest, availability, skill and exclusion filters over
PostGIS), scoring, and storing the ranked list.

1. The database must hold a city of exactly ``--users`` people (``generate_city``); with
   ``--generate`` an empty database gets one (``--seed``, ``--prefix``), otherwise the command
   refuses rather than time the wrong size.
2. It picks ``--activities`` published, upcoming activities of the city, spread over its ids.
3. For each, ``--repeat`` timed runs, each in a transaction that is rolled back, so every run sees
   the same state. The recruiting radius is set to ``--radius-km`` (default 10, the issue's
   default) inside that transaction; generated activities have radii of 2 to 15 km.
4. It prints the median, min and max seconds per run over every activity and run, the median of
   each stage, the ranker ("model" with a served embedding set, else "rules"), and how many
   people were eligible; ``--json`` writes every run.

Run it against a throwaway database (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from activities.models import Activity
from matching.services.activity_recommendations import activity_recommendations_compute
from users.models import User

WRONG_SIZE = "the database holds {have:,} people, not {want:,}: use a database with that city, or an empty one with --generate"


class _Rollback(Exception):
    pass


class Command(BaseCommand):
    help = "Time participant recommendation (the Celery task's work) on a generated city."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--users", type=int, default=1_000_000, help="city size (default 1000000)")
        parser.add_argument("--generate", action="store_true", help="generate the city into an empty database")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--prefix", default="bench")
        parser.add_argument("--activities", type=int, default=10, help="activities timed (default 10)")
        parser.add_argument("--repeat", type=int, default=3, help="runs per activity (default 3)")
        parser.add_argument("--radius-km", type=float, default=10.0, help="recruiting radius during the runs")
        parser.add_argument("--json", type=Path, metavar="FILE", help="also write every run to FILE")
        parser.add_argument(
            "--model", action="store_true",
            help="time the model path: without a served embedding set, first train a model (one epoch) "
            "and embed everyone in this process (untimed)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        want = options["users"]
        have = User.objects.count()
        if have == 0 and options["generate"]:
            call_command("generate_city", f"--users={want}", f"--seed={options['seed']}",
                         f"--prefix={options['prefix']}", f"--now={timezone.now():%Y-%m-%d}")
            have = User.objects.count()
        if have != want:
            raise CommandError(WRONG_SIZE.format(have=have, want=want))
        if options["model"]:
            self._ensure_served_model()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE activities_invitation; ANALYZE activities_waitlistentry")
        upcoming = list(
            Activity.objects.filter(status=Activity.Status.PUBLISHED, starts_at__gt=timezone.now() + dt.timedelta(hours=1))
            .order_by("pk").values_list("pk", flat=True)
        )
        if not upcoming:
            raise CommandError("no published upcoming activity in this database: generate a city with --now today")
        count = min(options["activities"], len(upcoming))
        chosen = [upcoming[i * len(upcoming) // count] for i in range(count)]
        runs: list[dict[str, Any]] = []
        for activity_id in chosen:
            for repeat in range(options["repeat"]):
                runs.append(self._timed(activity_id, options["radius_km"], repeat))
                last = runs[-1]
                self.stdout.write(
                    f"activity {activity_id} run {repeat + 1}: {last['seconds']:.3f} s, {last['candidates']} eligible, "
                    f"ranker {last['ranker']}"
                )
        seconds = [r["seconds"] for r in runs]
        stages = sorted({k for r in runs for k in r["timings"]})
        summary = {
            "users": have, "activities": count, "runs": len(runs), "radius_km": options["radius_km"],
            "median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "stages_median_s": {k: statistics.median(r["timings"].get(k, 0.0) for r in runs) for k in stages},
            "eligible_median": statistics.median(r["candidates"] for r in runs),
            "rankers": sorted({r["ranker"] for r in runs}),
        }
        self.stdout.write(
            f"\n{have:,} users, {count} activities x {options['repeat']} runs, radius {options['radius_km']} km: "
            f"median {summary['median_s']:.3f} s (min {summary['min_s']:.3f}, max {summary['max_s']:.3f}); "
            f"eligible people per activity (median) {summary['eligible_median']}; ranker {', '.join(summary['rankers'])}"
        )
        for stage, value in summary["stages_median_s"].items():
            self.stdout.write(f"  {stage}: median {value:.3f} s")
        if options["json"]:
            options["json"].write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))

    def _ensure_served_model(self) -> None:
        """Train (one epoch) and embed everyone here when no set is served; untimed set-up.

        The chunks run in this process (the chord ``embeddings_rebuild_start`` also queues is
        purged), so the benchmark needs no worker.
        """
        from matching.models import EmbeddingSet, ModelVersion
        from matching.services.embeddings import (
            CHUNK_USERS,
            embeddings_chunk,
            embeddings_finish,
            embeddings_rebuild_start,
        )
        from matching.services.training import model_train
        from matching.serving import store
        from socialmatch.celery import app

        if store.current() is not None:
            return
        began = time.perf_counter()
        version = ModelVersion.objects.filter(is_active=True).first()
        if version is None:
            self.stdout.write("training a model (one epoch) ...")
            version = model_train(epochs=1, folds=1, activate=True)
        ready = EmbeddingSet.objects.filter(model_version=version, status=EmbeddingSet.Status.READY).exists()
        if not ready:
            self.stdout.write(f"embedding everyone with {version.name} ...")
            embedding_set = embeddings_rebuild_start(version=version)
            app.control.purge()
            for start in range(0, embedding_set.users, CHUNK_USERS):
                embeddings_chunk(set_id=embedding_set.pk, start=start, end=min(start + CHUNK_USERS, embedding_set.users))
            embeddings_finish(set_id=embedding_set.pk)
        store.reset()
        if store.current() is None:
            raise CommandError("no embedding set is served after training: see the embedding set's error in the admin")
        self.stdout.write(f"model {version.name} served (set-up {time.perf_counter() - began:.0f} s, not timed)")

    def _timed(self, activity_id: int, radius_km: float, repeat: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        try:
            with transaction.atomic():
                Activity.objects.filter(pk=activity_id).update(recruit_radius_km=radius_km)
                began = time.perf_counter()
                run = activity_recommendations_compute(activity_id=activity_id)
                elapsed = time.perf_counter() - began
                if run is None:
                    raise CommandError(f"activity {activity_id} was not computed (not published or started)")
                result = {"activity": activity_id, "repeat": repeat, "seconds": elapsed, "candidates": run.candidates,
                          "stored": run.stored, "ranker": run.ranker, "timings": run.timings}
                raise _Rollback
        except _Rollback:
            pass
        return result
