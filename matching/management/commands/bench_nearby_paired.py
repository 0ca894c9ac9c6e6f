"""``manage.py bench_nearby_paired --against COMMIT [--people N] [--json FILE]``: this tree's
``nearby_matches`` against another commit's, in one process, each person asking both ways in turn.

On a shared two-core machine the same benchmark run minutes apart differs by up to 20%, more
than most single changes to a request. Here both versions answer the same people, alternating
which goes first, so the machine's drift touches both alike; the figure is the median over
people of the ratio this tree / the other commit, beside each side's median milliseconds.

The other commit's ``matching/services/nearby.py`` is read with ``git show`` and loaded as a
module of its own; everything it imports comes from this tree, so the comparison isolates that
file (the right tool for changes to it; for anything wider, alternate ``bench_serving`` runs of
two worktrees, as docs/BENCHMARKS.md describes). Runs against the database ``DATABASE_URL``
names, with its published embedding set, as ``bench_serving`` leaves it.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.core.management.base import BaseCommand, CommandError

NEARBY_FILE = "matching/services/nearby.py"
WARM_UP = 20  # people answered, not timed: connections, prepared statements, the set's pages


class Command(BaseCommand):
    help = "Time this tree's nearby_matches against another commit's, alternating per person."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--against", required=True, metavar="COMMIT", help="the commit to compare with")
        parser.add_argument("--people", type=int, default=400, help="random people with a location (default 400)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE")

    def handle(self, *args: Any, **options: Any) -> None:
        from matching.serving import store
        from users.models import Profile

        if options["people"] < 1:
            raise CommandError("--people must be at least 1")
        if settings.DEBUG:
            raise CommandError("run with DEBUG=false: under DEBUG Django keeps every query")
        other = _load_other(options["against"])
        from matching.services import nearby

        if store.current() is None:
            raise CommandError("no embedding set is published: run bench_serving on this database first")
        rng = np.random.default_rng(options["seed"])
        ids = list(Profile.objects.filter(location__isnull=False).values_list("user_id", flat=True))
        if not ids:
            raise CommandError("nobody in this database has a location")
        chosen = rng.choice(ids, size=min(len(ids), options["people"] + WARM_UP), replace=False).tolist()
        people = list(Profile.objects.filter(user_id__in=chosen).select_related("user"))
        rng.shuffle(people)
        warm_up = min(WARM_UP, len(people) // 2)  # a small city still leaves people to time
        sides = {"this": nearby.nearby_matches, "other": other.nearby_matches}
        times: dict[str, list[float]] = {"this": [], "other": []}
        for i, profile in enumerate(people):
            order = ["this", "other"] if i % 2 else ["other", "this"]
            for side in order:
                cache.delete(nearby._moves_key(profile.user_id))  # each answer is a fresh query point
                started = time.perf_counter()
                sides[side](user=profile.user)
                if i >= warm_up:
                    times[side].append((time.perf_counter() - started) * 1000)
        ratio = np.array(times["this"]) / np.array(times["other"])
        report = {
            "against": options["against"], "people": len(ratio),
            "this_p50_ms": round(statistics.median(times["this"]), 2),
            "other_p50_ms": round(statistics.median(times["other"]), 2),
            "median_ratio_this_over_other": round(float(np.median(ratio)), 3),
        }
        self.stdout.write(json.dumps(report, indent=2))
        if options["json"]:
            options["json"].parent.mkdir(parents=True, exist_ok=True)
            options["json"].write_text(json.dumps(report, indent=2) + "\n")


def _load_other(commit: str) -> Any:
    """``nearby.py`` as it was at ``commit``, as a module named apart from this tree's."""
    try:
        source = subprocess.run(
            ["git", "show", f"{commit}:{NEARBY_FILE}"], cwd=settings.BASE_DIR, check=True,
            capture_output=True, text=True,
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        raise CommandError(f"cannot read {NEARBY_FILE} at {commit!r}: {getattr(exc, 'stderr', exc)}".strip()) from exc
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(source)
    name = f"nearby_at_{commit.replace('-', '_')[:12]}"
    spec = importlib.util.spec_from_file_location(name, handle.name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    Path(handle.name).unlink()
    return module
