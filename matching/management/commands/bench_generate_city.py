"""``manage.py bench_generate_city --users 10000 100000 1000000 --repeat 3``: time generate_city.

Each run is a fresh ``manage.py generate_city ... --rollback --json FILE`` process, so a figure is
end to end (interpreter and Django start-up, generation, COPY, index rebuilds, foreign-key
validation, ANALYZE) except the final COMMIT, and the database is left as it was: every run starts
from the same state. A rolled-back load leaves its rows dead on disk, so the command VACUUMs the
written tables after each run (untimed); otherwise a later run would rebuild its indexes over the
earlier runs' dead rows. Run it against a throwaway database all the same (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from matching.citygen_db import WRITTEN_MODELS

# Never a prefix of real people: the runs roll back, but the prefix check still reads the table.
BENCH_PREFIX = "citygenbench_"
RUN_FAILED = "generate_city --users {users} failed with exit code {code}:\n{stderr}"


class Command(BaseCommand):
    help = (
        "Time generate_city end to end at the given sizes, each run in its own process and rolled "
        "back; print a Markdown table (median, min, max seconds, peak memory, rows written)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
            help="city sizes (default 10000 100000 1000000)",
        )
        parser.add_argument("--repeat", type=int, default=3, help="runs per size (default 3)")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument(
            "--now", default="2026-01-01",
            help="reference date passed to generate_city (fixed, so runs are identical)",
        )
        parser.add_argument(
            "--json", type=Path, metavar="FILE", help="also write every run to FILE"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["repeat"] < 1:
            raise CommandError("--repeat must be at least 1")
        manage = Path(settings.BASE_DIR) / "manage.py"
        results: list[dict[str, Any]] = []
        self.stdout.write(
            "| users | runs | median s | min s | max s | peak RSS MB | rows written |"
        )
        self.stdout.write("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for users in options["users"]:
            runs = []
            for _ in range(options["repeat"]):
                runs.append(self._run(manage, users, options))
                self._vacuum()
            results += runs
            walls = [r["wall_seconds"] for r in runs]
            self.stdout.write(
                f"| {users:,} | {len(runs)} | {statistics.median(walls):.1f} | {min(walls):.1f} | "
                f"{max(walls):.1f} | {max(r['peak_rss_mb'] for r in runs):,.0f} | "
                f"{sum(runs[0]['rows'].values()):,} |"
            )
        if options["json"]:
            options["json"].write_text(json.dumps(results, indent=2) + "\n")

    def _vacuum(self) -> None:
        tables = ", ".join(m._meta.db_table for m in WRITTEN_MODELS)
        with connection.cursor() as cursor:  # autocommit: VACUUM cannot run in a transaction
            cursor.execute(f"VACUUM {tables}")

    def _run(self, manage: Path, users: int, options: dict[str, Any]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "run.json"
            command = [
                sys.executable, str(manage), "generate_city", "--users", str(users),
                "--seed", str(options["seed"]), "--prefix", BENCH_PREFIX, "--now", options["now"],
                "--rollback", "--json", str(report),
            ]
            started = time.perf_counter()
            done = subprocess.run(command, env=os.environ.copy(), capture_output=True, text=True)
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise CommandError(
                    RUN_FAILED.format(users=users, code=done.returncode, stderr=done.stderr)
                )
            result: dict[str, Any] = json.loads(report.read_text())
        result["wall_seconds"] = round(wall, 3)
        return result
