"""``manage.py bench_serving --users N [--json FILE]``: the serving goals of docs/BENCHMARKS.md.

Runs on whatever database ``DATABASE_URL`` names (a throwaway one: see docs/BENCHMARKS.md or
``make bench-serving``) and measures, in this order:

1. City: an empty database gets ``generate_city --users N --seed S --prefix bench``; one that
   holds exactly N people is reused; any other size is refused (use a fresh database per size).
2. Model: the active version is reused when it was trained on N people; otherwise a short
   training (``--epochs``, one cross-fitting fold) is run and activated, and its weights and
   configuration are described in ``var/bench/model-N.json``. ``--model-from FILE`` imports
   such a description instead (a model trained on a smaller city of the same generator: user ids
   hash into its buckets, so it embeds any city), for sizes where training takes longer than the
   benchmark. Speed, not quality, is measured here (quality: docs/EVALUATION.md).
3. Re-embedding: two Celery worker processes (one ``celery worker -c 2``, started here on a
   private queue) recompute every user's embeddings and the FAISS index through
   ``embeddings_rebuild_start``; wall clock from the start to the set being ready. What the new
   set queues on the bulk queue (a private one here) is dropped and counted, so that it does not
   run during the later phases.
4. ANN: top-20 of ``--ann-queries`` people's seed embeddings in the published index against an
   exact inner-product scan of the same vectors (recall), and milliseconds per single query
   with one thread (as a web request runs it).
5. Ranking: one asker and their 1,000 nearest candidates; pair features and the ranking head
   in one vectorised pass against a loop that computes one candidate's features and calls the
   model once per pair (the seed's way), both on the same loaded context.
6. HTTP: unless ``--cold``, the tables and indexes a nearby request reads are first loaded into
   PostgreSQL's shared buffers (``pg_prewarm``; ``scripts/bench_serving.sh`` sizes the buffers
   as a production server's). Then gunicorn (``--web-workers`` gthread workers) serving the real
   project, with a Celery worker writing the buffered impressions, and a load
   generator in a separate process with persistent connections, signed in as ``--sessions``
   distinct people through sessions created here. First ``--rate`` requests/s open loop
   (latency counted from each request's scheduled time, so a stalled server cannot hide its
   queue), which gives p50 and p99; then closed loop at ``--concurrency`` for the most
   requests/s the server sustains. ``--requests-log FILE`` keeps every request's times (CSV):
   whether the slow ones come in bursts or spread out.
7. Breakdown: in-process, where a request's time goes (``_breakdown``): the whole
   ``nearby_matches`` and its candidates (exclusions and the people map), pair context and pair
   features, medians over ``--breakdown-people`` random people; and the seconds and megabytes
   of loading the people map, as each web worker does before its first request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from argparse import ArgumentParser
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

PREFIX = "bench"
NEARBY_PATH = "/api/v1/matches/nearby/?radius_km=5&limit=20"
WRONG_SIZE = (
    "the database holds {found:,} people, not {wanted:,}: run bench_serving on an empty database "
    "(one per size) or on the one it filled before"
)
PARTS = ("embed", "ann", "rank", "http", "breakdown")
# Above this many people a model is imported (--model-from), never trained here: training on a
# million people takes hours on two cores (the ranking head's cross-fitting).
TRAIN_MAX_USERS = 100_000
OPEN_LOOP_GRACE = 10.0  # seconds an open-loop phase may overrun before it stops sending


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# ----------------------------------------------------------------------------------------------
# The load generator: runs in its own process (multiprocessing "spawn"), imports no Django.


def _load_thread(port: int, cookies: list[str], schedule: list[float] | None, stop_at: float,
                 requests: list[tuple[float, float, float, int]], statuses: dict[int, int],
                 lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    i = 0
    local: list[tuple[float, float, float, int]] = []  # (due or sent, sent, answered, status)
    local_status: dict[int, int] = {}
    while True:
        if schedule is not None:
            # A server that cannot keep up is not waited for beyond a grace period: what was
            # not sent by then is reported as unsent, and the latencies are a lower bound.
            if i >= len(schedule) or time.perf_counter() > stop_at + OPEN_LOOP_GRACE:
                break
            due = schedule[i]
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        elif time.perf_counter() >= stop_at:
            break
        start = time.perf_counter()
        cookie = cookies[i % len(cookies)]
        try:
            conn.request("GET", NEARBY_PATH, headers={"Cookie": f"sessionid={cookie}"})
            response = conn.getresponse()
            response.read()
            status = response.status
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
        except (OSError, http.client.HTTPException):
            conn.close()
            status = 0
        end = time.perf_counter()
        # Open loop: latency from the scheduled time, so time spent waiting for a busy thread counts.
        local.append((schedule[i] if schedule is not None else start, start, end, status))
        local_status[status] = local_status.get(status, 0) + 1
        i += 1
    conn.close()
    with lock:
        statuses[-1] = statuses.get(-1, 0) + (len(schedule) - i if schedule is not None else 0)
        requests.extend(local)
        for code, count in local_status.items():
            statuses[code] = statuses.get(code, 0) + count


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_by_part() -> dict[str, float]:
    """CPU seconds used so far by each part of the serving machine, from /proc: the web server
    (gunicorn), PostgreSQL, the Celery worker, Redis, this load generator, and the whole machine
    (busy time of every core). Processes that end in between take theirs with them."""
    parts = {"web": 0.0, "postgres": 0.0, "worker": 0.0, "redis": 0.0, "loader": 0.0}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue  # gone meanwhile
        comm = stat[stat.index(b"(") + 1:stat.rindex(b")")]
        fields = stat[stat.rindex(b")") + 2:].split()
        seconds = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        if int(entry) == me:
            part = "loader"
        elif b"gunicorn" in cmdline:
            part = "web"
        elif comm == b"postgres" or cmdline.startswith(b"postgres"):
            part = "postgres"
        elif b"celery" in cmdline:
            part = "worker"
        elif comm.startswith(b"redis-server"):
            part = "redis"
        else:
            continue
        parts[part] += seconds
    with open("/proc/stat") as handle:
        cpu = [int(x) for x in handle.readline().split()[1:]]
    parts["machine"] = (sum(cpu[:8]) - cpu[3] - cpu[4]) / _TICK  # all but idle and iowait
    return parts


def _load_run(
    port: int, cookies: list[str], *, threads: int, seconds: float, rate: float | None,
) -> tuple[dict[str, Any], list[tuple[float, float, float, int]]]:
    """Requests against the server for ``seconds``: open loop at ``rate``/s, or closed loop.
    Also the CPU milliseconds per answered request of each part of the machine meanwhile.
    Returns the figures and every request's (due, sent, answered, status), in seconds from the
    run's start, ordered by when it was due."""
    cpu_before = _cpu_by_part()
    requests: list[tuple[float, float, float, int]] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    t0 = time.perf_counter() + 0.2
    workers = []
    for t in range(threads):
        mine = cookies[t::threads] or cookies
        schedule = None
        if rate is not None:
            total = int(rate * seconds)
            schedule = [t0 + k / rate for k in range(t, total, threads)]
        args = (port, mine, schedule, t0 + seconds, requests, statuses, lock)
        workers.append(threading.Thread(target=_load_thread, args=args, daemon=True))
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    cpu_after = _cpu_by_part()
    ms = [(end - due) * 1000 for due, _, end, _ in requests]
    ok = statuses.get(200, 0)
    unsent = statuses.pop(-1, 0)
    cpu_ms = {part: round((cpu_after[part] - cpu_before[part]) * 1000 / max(ok, 1), 2) for part in cpu_after}
    cpu_ms["other"] = round(cpu_ms["machine"] - sum(v for k, v in cpu_ms.items() if k != "machine"), 2)
    return {
        "requests": len(ms), "ok": ok, "unsent": unsent,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": round(elapsed, 2), "rps": round(ok / elapsed, 1),
        "p50_ms": round(_percentile(ms, 50), 2), "p90_ms": round(_percentile(ms, 90), 2),
        "p99_ms": round(_percentile(ms, 99), 2), "max_ms": round(max(ms), 2) if ms else None,
        "threads": threads, "offered_rps": rate, "cpu_ms_per_request": cpu_ms,
    }, sorted((due - t0, sent - t0, end - t0, status) for due, sent, end, status in requests)


def _load_process(port: int, cookies: list[str], plan: list[dict[str, Any]], out: Any) -> None:
    out.put([_load_run(port, cookies, **step) for step in plan])


PHASES = ("warm_up", "one_at_a_time", "open_loop", "closed_loop")


def _requests_log(path: Path, runs: list[tuple[dict[str, Any], list[tuple[float, float, float, int]]]]) -> None:
    """Every request of the HTTP phases as CSV: phase, when it was due, sent and answered
    (seconds from the phase's start) and its status. Slow requests that come in bursts point at
    something that stalls the server (a collection, a competing write); spread ones, at queueing."""
    with path.open("w") as handle:
        handle.write("phase,due_s,sent_s,answered_s,latency_ms,status\n")
        for phase, (_, requests) in zip(PHASES, runs, strict=True):
            for due, sent, end, status in requests:
                handle.write(f"{phase},{due:.6f},{sent:.6f},{end:.6f},{(end - due) * 1000:.3f},{status}\n")


# ----------------------------------------------------------------------------------------------


class Command(BaseCommand):
    help = "Measure serving: nearby over HTTP under load, ranking, ANN recall and re-embedding."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--users", type=int, required=True, help="people in the city")
        parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures to FILE")
        parser.add_argument("--seed", type=int, default=1, help="generate_city seed (default 1)")
        parser.add_argument("--epochs", type=int, default=1,
                            help="tower epochs when a model must be trained")
        parser.add_argument("--model-from", type=Path, metavar="FILE",
                            help="import the model described by FILE (written by an earlier run)")
        parser.add_argument("--skip", nargs="*", default=[], choices=PARTS, help="parts not to run")
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--web-threads", type=int, default=4)
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--sessions", type=int, default=500, help="distinct signed-in people")
        parser.add_argument("--rate", type=float, default=150.0, help="open-loop requests/s")
        parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
        parser.add_argument("--concurrency", type=int, default=8, help="closed-loop connections")
        parser.add_argument("--ann-queries", type=int, default=1000)
        parser.add_argument("--requests-log", type=Path, metavar="FILE",
                            help="write every HTTP request's phase, due, sent and answered times as CSV")
        parser.add_argument("--breakdown-people", type=int, default=100,
                            help="people whose nearby request is timed part by part, in-process")
        parser.add_argument("--cold", action="store_true",
                            help="skip loading the tables nearby reads into PostgreSQL's buffers first")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.DEBUG:
            raise CommandError("run with DEBUG=false: under DEBUG Django keeps every query")
        n: int = options["users"]
        report: dict[str, Any] = {"users": n, "load_before": _loadavg()}
        if n > TRAIN_MAX_USERS and options["model_from"] is None and not _trained_on(_active_version(), n):
            raise CommandError(
                f"no model trained on {n:,} people is active, and training one here takes hours: pass "
                "--model-from var/bench/model-10000.json (written by a run on a smaller city, as "
                "scripts/bench_serving.sh does)"
            )
        self._city(n, options["seed"], report)
        version = self._model(n, options["epochs"], options["model_from"], report)
        if "embed" not in options["skip"]:
            self._reembed(version, report)
        embedding_set = self._ready_set(version)
        report["embedding_set"] = embedding_set.pk
        if "ann" not in options["skip"]:
            self._ann(embedding_set, options["ann_queries"], report)
        if "rank" not in options["skip"]:
            self._rank(embedding_set, report)
        if "http" not in options["skip"]:
            self._http(embedding_set, options, report)
        if "breakdown" not in options["skip"]:
            report["breakdown"] = _breakdown(people=options["breakdown_people"])
        report["load_after"] = _loadavg()
        self.stdout.write(json.dumps(report, indent=2))
        if options["json"]:
            options["json"].parent.mkdir(parents=True, exist_ok=True)
            options["json"].write_text(json.dumps(report, indent=2) + "\n")

    # 1. ------------------------------------------------------------------------------------
    def _city(self, n: int, seed: int, report: dict[str, Any]) -> None:
        from users.models import User

        found = User.objects.count()
        if found == 0:
            started = time.perf_counter()
            call_command("generate_city", users=n, seed=seed, prefix=PREFIX, stdout=self.stdout)
            report["generate_seconds"] = round(time.perf_counter() - started, 1)
            # What autovacuum does within minutes of a bulk load: the visibility map lets the
            # nearby statements' covering indexes answer without reading the tables.
            started = time.perf_counter()
            with connection.cursor() as cursor:
                for table in ("users_user", "users_profile", "users_connection", "matching_interaction"):
                    cursor.execute(f"VACUUM (ANALYZE) {table}")
            report["vacuum_seconds"] = round(time.perf_counter() - started, 1)
        elif User.objects.filter(username__startswith=PREFIX).count() != n:
            raise CommandError(WRONG_SIZE.format(found=found, wanted=n))

    # 2. ------------------------------------------------------------------------------------
    def _model(self, n: int, epochs: int, model_from: Path | None, report: dict[str, Any]) -> Any:
        from matching.services.registry import model_version_activate
        from matching.services.training import model_train

        version = _active_version()
        if model_from is not None:
            described = json.loads(model_from.read_text())
            if version is None or version.metrics.get("imported_sha256") != described["sha256"]:
                imported = _import_model(described)
                version = model_version_activate(version=imported, note="bench_serving import")
        elif not _trained_on(version, n):
            started = time.perf_counter()
            version = model_train(epochs=epochs, folds=1, activate=True)
            report["train_seconds"] = round(time.perf_counter() - started, 1)
        if model_from is None:
            path = Path(settings.MEDIA_ROOT) / version.weights
            description = {"config": version.config, "weights": str(path.resolve()),
                           "sha256": version.sha256, "users": n, "name": version.name}
            out = Path(settings.BASE_DIR) / "var" / "bench" / f"model-{n}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(description, indent=2) + "\n")
        report["model_version"] = version.name
        report["model_trained_on_users"] = int(version.metrics.get("users", 0))
        return version

    # 3. ------------------------------------------------------------------------------------
    def _reembed(self, version: Any, report: dict[str, Any]) -> None:
        from matching.models import EmbeddingSet
        from matching.services.embeddings import embeddings_rebuild_start
        from socialmatch.celery import queue_purge

        with _celery_worker(concurrency=2) as (worker, _):
            started = time.perf_counter()
            embedding_set = embeddings_rebuild_start(version=version)
            queued = time.perf_counter()
            while True:
                embedding_set.refresh_from_db()
                if embedding_set.status != EmbeddingSet.Status.BUILDING:
                    break
                if worker.poll() is not None:
                    raise CommandError("the Celery worker died during the rebuild")
                time.sleep(0.25)
            finished = time.perf_counter()
        if embedding_set.status != EmbeddingSet.Status.READY:
            raise CommandError(f"embedding set {embedding_set.pk} failed: {embedding_set.error}")
        report["reembed_seconds"] = round(finished - started, 1)
        # What a new set queues on the bulk queue (activity recommendations recomputed with it:
        # up to 2,000, 1 to 2 s each at 1,000,000 people) is a production worker's job for the
        # next hour, not serving's: run during the HTTP phases it took a core from them. Dropped,
        # and counted.
        report["bulk_tasks_not_run"] = queue_purge(_bulk_queue())
        report["reembed_split"] = {
            "inputs_in_caller": round(queued - started, 1),
            "chunks_and_index_on_workers": round(finished - queued, 1),
            "chunks": embedding_set.chunks_total, "index_kind": embedding_set.index_kind,
        }

    def _ready_set(self, version: Any) -> Any:
        from django.core.cache import cache

        from matching.models import EmbeddingSet
        from matching.serving import SERVING_SET_KEY

        embedding_set = (
            EmbeddingSet.objects.filter(model_version=version, status=EmbeddingSet.Status.READY)
            .order_by("-created_at").first()
        )
        if embedding_set is None:
            raise CommandError("no ready embedding set for the active version: drop --skip embed")
        key = f"{embedding_set.pk}:{version.name}:{time.time():.0f}"
        cache.set(SERVING_SET_KEY, key, timeout=None)
        return embedding_set

    # 4. ------------------------------------------------------------------------------------
    def _ann(self, embedding_set: Any, queries: int, report: dict[str, Any]) -> None:
        import faiss

        from matching.ml.index import load_index, search
        from matching.serving import set_dir

        directory = set_dir(embedding_set)
        index = load_index(directory / "index.faiss")
        ids = np.load(directory / "ids.npy")
        seed = np.load(directory / "seed.npy", mmap_mode="r")
        target = np.array(np.load(directory / "target.npy", mmap_mode="r"), dtype=np.float32)
        faiss.normalize_L2(target)
        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(len(ids), size=min(queries, len(ids)), replace=False))
        q = np.array(seed[rows], dtype=np.float32)
        exact = faiss.IndexFlatIP(target.shape[1])
        exact.add(target)
        qn = q.copy()
        faiss.normalize_L2(qn)
        _, truth = exact.search(qn, 20)
        truth_ids = ids[truth]
        _, approx = search(index, q, 20)
        pairs = zip(approx, truth_ids, strict=True)
        recall = float(np.mean([len(set(a.tolist()) & set(t.tolist())) / 20 for a, t in pairs]))
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            times = []
            for row in q:
                started = time.perf_counter()
                search(index, row[None, :], 20)
                times.append((time.perf_counter() - started) * 1000)
        finally:
            faiss.omp_set_num_threads(threads)
        report["ann_recall_at_20"] = round(recall, 4)
        report["ann_ms_per_query"] = round(statistics.median(times), 4)
        report["ann"] = {
            "index": type(index).__name__, "vectors": int(index.ntotal),
            "nprobe": getattr(index, "nprobe", None), "queries": len(q),
            "p99_ms": round(_percentile(times, 99), 4),
        }

    # 5. ------------------------------------------------------------------------------------
    def _rank(self, embedding_set: Any, report: dict[str, Any]) -> None:
        from matching.services.nearby import rank_speed

        figures = rank_speed(candidates=1000)
        speedup = figures["loop_ms"] / figures["vectorised_ms"]
        report["rank_speedup_vs_pair_loop"] = round(speedup, 1)
        report["rank"] = figures

    # 6. ------------------------------------------------------------------------------------
    def _http(self, embedding_set: Any, options: dict[str, Any], report: dict[str, Any]) -> None:
        from matching.models import Interaction
        from matching.services.impressions import impressions_flush, impressions_pending

        cookies = _sessions(options["sessions"])
        if not options["cold"]:
            report["prewarm"] = _prewarm()
        impressions_flush()
        impressions_before = Interaction.objects.filter(kind="impression").count()
        # A worker writes the impressions the answers buffer, as in production: its CPU time
        # is part of serving and shares the cores with the web server.
        with _celery_worker(concurrency=1) as (_, queue):
            results = self._http_phases(options, cookies, report, queue)
            time.sleep(settings.IMPRESSIONS_FLUSH_SECONDS + 1.0)  # the last answers' flush
            report["impressions_pending_after"] = impressions_pending()
        report["impressions_written"] = Interaction.objects.filter(kind="impression").count() - impressions_before
        if options["requests_log"]:
            _requests_log(options["requests_log"], results)
        phases = {phase: figures for phase, (figures, _) in zip(PHASES, results, strict=True)}
        report["nearby_p50_ms"] = phases["open_loop"]["p50_ms"]
        report["nearby_p99_ms"] = phases["open_loop"]["p99_ms"]
        report["nearby_rps"] = phases["closed_loop"]["rps"]
        report["http"] = {
            **phases,
            "web_workers": options["web_workers"], "web_threads": options["web_threads"],
            "sessions": len(cookies),
        }

    def _http_phases(
        self, options: dict[str, Any], cookies: list[str], report: dict[str, Any], queue: str,
    ) -> list[tuple[dict[str, Any], list[tuple[float, float, float, int]]]]:
        port = options["port"]
        env = {
            **os.environ, "DEBUG": "false", "OMP_NUM_THREADS": "1", "CELERY_TASK_DEFAULT_QUEUE": queue,
            # The per-user throttle stays on the path (it costs a Redis round trip per request),
            # with a rate the load generator's few hundred people never reach.
            "NEARBY_THROTTLE": "100000/min",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "socialmatch.wsgi:application", "--config", "python:socialmatch.gunicorn",
             "--workers", str(options["web_workers"]), "--worker-class", "gthread",
             "--threads", str(options["web_threads"]), "--bind", f"127.0.0.1:{port}",
             "--log-level", "warning", "--keep-alive", "30"],
            env=env, cwd=settings.BASE_DIR, start_new_session=True,
        )
        try:
            _wait_for_server(port, cookies[0], server)
            seconds = options["seconds"]
            plan = [
                # warm-up: every worker loads the set and the model
                {"threads": 4, "seconds": 5.0, "rate": None},
                # one request at a time: the service time without queueing
                {"threads": 1, "seconds": seconds / 2, "rate": None},
                {"threads": 32, "seconds": seconds, "rate": options["rate"]},
                {"threads": options["concurrency"], "seconds": seconds, "rate": None},
            ]
            context = multiprocessing.get_context("spawn")
            out = context.Queue()
            loader = context.Process(target=_load_process, args=(port, cookies, plan, out))
            report["load_during"] = None
            loader.start()
            time.sleep(5.0 + seconds)
            report["load_during"] = _loadavg()
            results = out.get(timeout=600)
            loader.join(timeout=60)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        return results


@contextlib.contextmanager
def _celery_worker(*, concurrency: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A ``celery worker -c concurrency`` and its queue, this run's own: tasks sent from this
    process (and from children given ``CELERY_TASK_DEFAULT_QUEUE``) go there; stopped on exit."""
    from socialmatch.celery import app

    queue = f"bench-{os.getpid()}"
    app.conf.task_default_queue = queue
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "socialmatch", "worker", "-c", str(concurrency), "-Q", queue,
         "--loglevel=WARNING", "--without-gossip", "--without-mingle", "-n", f"{queue}@%h"],
        env={**os.environ, "CELERY_TASK_DEFAULT_QUEUE": queue, "CELERY_BULK_QUEUE": _bulk_queue()},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        name = f"{queue}@{socket.gethostname()}"
        while not app.control.ping(timeout=1.0, destination=[name]):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise CommandError("the Celery worker did not start")
        yield worker, queue
    finally:
        # A warm shutdown: the main process alone is told, so the pool finishes what it runs (the
        # re-embedding's last task deletes the set's inputs after marking it ready; SIGTERM to the
        # whole group killed it half-way and left its files behind). Killed if it hangs.
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)


def _bulk_queue() -> str:
    """This run's own bulk queue (``CELERY_BULK_QUEUE`` of its workers), which no worker takes."""
    return f"bench-{os.getpid()}-bulk"


def _active_version() -> Any:
    from matching.models import ModelVersion

    return ModelVersion.objects.filter(is_active=True).first()


def _trained_on(version: Any, n: int) -> bool:
    """Whether ``version`` (the active one, or None) was trained on ``n`` people: nothing to train."""
    return version is not None and int(version.metrics.get("users", 0)) == n


def _breakdown(*, people: int) -> dict[str, Any]:
    """Where a nearby request's time goes, in-process (no HTTP): medians over ``people`` random
    people with a location of ``nearby_matches`` whole, and of its three largest parts run on
    their own for the same person: the candidates (the asker's exclusions statement and the
    people map), the pair context (statement and set rows, for the ``RERANK_POOL`` nearest) and
    the pair features. Milliseconds."""
    from django.core.cache import cache

    from matching.services.nearby import (
        RERANK_POOL,
        _moves_key,
        nearby_candidates,
        nearby_matches,
        pair_context_load,
        pair_features_served,
    )
    from matching.serving import store
    from users.models import Profile

    serving = store.current()
    # What a web worker does before its first request (``socialmatch.gunicorn``): load the people
    # map. Its seconds and its arrays' size.
    from matching.people_map import people_map

    people_map.reset()
    started = time.perf_counter()
    state = people_map.current()
    map_seconds = time.perf_counter() - started
    base, friends = state.base, state.friends
    arrays = [getattr(base, f.name) for f in dataclasses.fields(base)]  # every column the map keeps
    map_bytes = sum(a.nbytes for a in (*arrays, state.dead, friends.offsets, friends.neighbours))
    warm_up = 10  # the first requests warm up connections and prepared statements
    chosen = list(Profile.objects.filter(location__isnull=False).select_related("user").order_by("?")[:people + warm_up])
    warm_up = min(warm_up, len(chosen) // 2)
    times: dict[str, list[float]] = {"total": [], "candidates": [], "context": [], "features": []}
    for i, profile in enumerate(chosen):
        cache.delete(_moves_key(profile.user_id))
        started = time.perf_counter()
        nearby_matches(user=profile.user)
        total = time.perf_counter() - started
        started = time.perf_counter()
        found = nearby_candidates(me=profile.user_id, lon=profile.location.x, lat=profile.location.y, radius_km=5.0)
        candidates = time.perf_counter() - started
        ids = found.ids[:RERANK_POOL]
        started = time.perf_counter()
        context = pair_context_load(me=profile.user_id, candidates=ids, serving=serving)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        if serving is not None and serving.pref is not None and len(ids):
            pair_features_served(context, serving, distance_km=found.distance_m[:RERANK_POOL] / 1000.0,
                                 my_birth_year=profile.birth_year, birth_years=np.full(len(ids), np.nan))
        features = time.perf_counter() - started
        if i >= warm_up:
            for name, value in (("total", total), ("candidates", candidates), ("context", loaded), ("features", features)):
                times[name].append(value * 1000)
    return {f"{name}_p50_ms": round(statistics.median(v), 2) for name, v in times.items() if v} | {
        "people": people, "people_map_load_seconds": round(map_seconds, 2),
        "people_map_mb": round(map_bytes / 1e6, 1)}


# The relations a nearby request reads (tables and all their indexes).
PREWARM_TABLES = (
    "users_profile", "users_user", "users_connection", "users_block", "users_availability",
    "users_locationping", "matching_interaction", "activities_participation", "django_session",
)


def _prewarm() -> dict[str, Any]:
    """Load what nearby reads into PostgreSQL's shared buffers (``pg_prewarm``), as a server
    that has been answering for a while holds it; the timed phases then measure the steady
    state, not the first pass over a cold cache. Returns the pages loaded and the seconds."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        try:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        except Exception as exc:  # noqa: BLE001 - no contrib package: measure cold, and say so
            return {"done": False, "error": str(exc)}
        cursor.execute(
            """SELECT coalesce(sum(pg_prewarm(c.oid)), 0) FROM pg_class c
               WHERE c.oid = ANY(%s::regclass[])
                  OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = ANY(%s::regclass[]))""",
            [list(PREWARM_TABLES), list(PREWARM_TABLES)],
        )
        pages = int(cursor.fetchone()[0])
        cursor.execute("SHOW shared_buffers")
        shared_buffers = cursor.fetchone()[0]
    return {"done": True, "pages": pages, "seconds": round(time.perf_counter() - started, 1),
            "shared_buffers": shared_buffers}


def _import_model(described: dict[str, Any]) -> Any:
    """A new version holding the weights ``described`` (checked against their checksum)."""
    import hashlib

    import torch

    from matching.ml.model import RALM, ModelConfig
    from matching.services.registry import model_version_create

    path = Path(described["weights"])
    if hashlib.sha256(path.read_bytes()).hexdigest() != described["sha256"]:
        raise CommandError(f"{path} does not match the checksum in the model description")
    model = RALM(ModelConfig.from_dict(described["config"]["model"]))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model_version_create(
        model=model.eval(), config=described["config"], curves={},
        metrics={"users": float(described["users"]), "imported_sha256": described["sha256"]},
    )


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _sessions(count: int) -> list[str]:
    """Session keys of ``count`` distinct people with a location, as Django's login makes them."""
    from importlib import import_module

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    SessionStore = import_module(settings.SESSION_ENGINE).SessionStore  # noqa: N806 (Django's name)

    from users.models import User

    users = list(
        User.objects.filter(is_active=True, profile__location__isnull=False,
                            username__startswith=PREFIX).order_by("?")[:count]
    )
    keys = []
    for user in users:
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "users.backends.PreparedModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        keys.append(session.session_key)
    if not keys:
        raise CommandError("nobody in the database has a location")
    return keys


def _wait_for_server(port: int, cookie: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise CommandError(f"gunicorn exited with {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", NEARBY_PATH, headers={"Cookie": f"sessionid={cookie}"})
            response = conn.getresponse()
            body = response.read()
            conn.close()
            if response.status == 200:
                return
            raise CommandError(f"nearby answered {response.status}: {body[:300]!r}")
        except OSError:
            time.sleep(0.5)
    raise CommandError("gunicorn did not answer within 120 s")
