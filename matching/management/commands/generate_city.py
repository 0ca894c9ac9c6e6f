"""``manage.py generate_city --users N --seed S [--prefix demo] [--activities M]``: make a city.

Generation is ``matching.citygen`` (numpy); writing is ``matching.citygen_db`` (COPY, one
transaction). The same seed, size and ``--now`` give the same content on every run.
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import time
from argparse import ArgumentParser, ArgumentTypeError
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from matching.citygen import CityConfig, city_generate
from matching.citygen_db import (
    PREFIX_TAKEN,
    CityWriteError,
    city_write,
    prefix_example,
    prefix_validate,
)

BAD_CENTRE = "--centre must be LON,LAT in degrees, for example -79.99,40.44"
BAD_NOW = "--now must be a date or time in ISO 8601, for example 2026-03-01"


def _centre(value: str) -> tuple[float, float]:
    try:
        lon, lat = (float(part) for part in value.split(","))
    except ValueError:
        raise ArgumentTypeError(BAD_CENTRE) from None
    return lon, lat


def _now(value: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ArgumentTypeError(BAD_NOW) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


def _today() -> int:
    """Midnight UTC today: two runs on the same day generate the same timestamps."""
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int(today.timestamp())


class Command(BaseCommand):
    help = (
        "Generate a believable city of N people in latent communities (interests, homes, "
        "availability, friendships, visits, activities) and write it with COPY in one "
        "transaction. Refuses a prefix that already has people."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--users", type=int, required=True, help="number of people (at least 10)"
        )
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        parser.add_argument(
            "--prefix", default="demo",
            help="usernames are PREFIX0000000, PREFIX0000001, ... (default demo)",
        )
        parser.add_argument(
            "--activities", type=int,
            help="number of activities (default: 1 per 100 people, at least 10)",
        )
        parser.add_argument(
            "--centre", type=_centre, metavar="LON,LAT",
            help="city centre (default -79.99,40.44, Pittsburgh)",
        )
        parser.add_argument(
            "--now", type=_now, metavar="ISO",
            help="reference time: visits lie before it, activities after (default today 00:00 UTC)",
        )
        parser.add_argument(
            "--rebuild-indexes", choices=("auto", "always", "never"), default="auto",
            help="drop and rebuild the written tables' indexes around the load "
            "(auto: for 10,000 people or more, when the city outgrows what is there)",
        )
        parser.add_argument(
            "--rollback", action="store_true",
            help="write everything, check every constraint, then roll back (benchmarks, dry runs)",
        )
        parser.add_argument(
            "--json", type=Path, metavar="FILE",
            help="write timings, row counts and peak memory to FILE",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.perf_counter()
        prefix: str = options["prefix"]
        try:
            prefix_validate(prefix)
        except CityWriteError as error:
            raise CommandError(str(error)) from error
        # Checked again under a lock when writing; checking first saves generating for nothing.
        example = prefix_example(prefix)
        if example is not None:
            raise CommandError(PREFIX_TAKEN.format(prefix=prefix, example=example))

        centre = options["centre"] or (CityConfig.centre_lon, CityConfig.centre_lat)
        try:
            config = CityConfig(
                users=options["users"],
                seed=options["seed"],
                now=options["now"] if options["now"] is not None else _today(),
                activities=options["activities"],
                centre_lon=centre[0],
                centre_lat=centre[1],
            )
        except ValueError as error:
            raise CommandError(str(error)) from error

        city = city_generate(config)
        generated = time.perf_counter()
        rebuild = {"auto": None, "always": True, "never": False}[options["rebuild_indexes"]]
        try:
            report = city_write(
                city, prefix=prefix, rebuild_indexes=rebuild, rollback=options["rollback"]
            )
        except CityWriteError as error:
            raise CommandError(str(error)) from error
        finished = time.perf_counter()

        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        verb = "rolled back" if options["rollback"] else "wrote"
        self.stdout.write(
            f"{verb} a city of {config.users:,} people (seed {config.seed}, prefix {prefix!r}) "
            f"in {finished - started:.1f} s: generated in {generated - started:.1f} s, "
            f"written in {finished - generated:.1f} s; peak memory {peak_rss_mb:,.0f} MB"
        )
        for table, rows in report.rows.items():
            self.stdout.write(f"  {table:<30} {rows:>12,}")
        if options["json"]:
            summary = {
                "users": config.users,
                "seed": config.seed,
                "prefix": prefix,
                "committed": report.committed,
                "rebuilt_indexes": report.rebuilt_indexes,
                "seconds": {
                    "total": round(finished - started, 3),
                    "generate": round(generated - started, 3),
                    "write": round(finished - generated, 3),
                },
                "write_phases": report.seconds,
                "rows": report.rows,
                "peak_rss_mb": round(peak_rss_mb, 1),
            }
            options["json"].write_text(json.dumps(summary, indent=2) + "\n")
