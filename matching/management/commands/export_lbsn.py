"""Write people of the database as an LBSN dataset directory (the layout import_lbsn reads).

Useful to evaluate the matcher offline on a generated city of any size:
``generate_city --users 5000`` then ``export_lbsn DIR --prefix demo`` then
``evaluate_matching DIR``. Ids are renumbered from 0 in database order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from activities.models import Venue
from matching.models import Interaction
from users.models import Connection, User


class Command(BaseCommand):
    help = "Export users (all, or those whose username starts with --prefix) as an LBSN dataset directory."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--prefix", default="", help="only users whose username starts with this")
        parser.add_argument("--name", default="City", help='file prefix, e.g. "City" for City_train.txt')

    def handle(self, *args: Any, **options: Any) -> None:
        directory: Path = options["directory"]
        if directory.exists() and any(directory.iterdir()):
            raise CommandError(f"{directory} exists and is not empty")
        directory.mkdir(parents=True, exist_ok=True)
        users = np.array(User.objects.filter(username__startswith=options["prefix"]).order_by("pk").values_list("pk", flat=True))
        if not len(users):
            raise CommandError("no users to export")
        user_row = {int(u): i for i, u in enumerate(users)}
        visits = list(
            Interaction.objects.filter(kind="visit", actor_id__in=users.tolist(), target_venue__isnull=False)
            .values_list("actor_id", "target_venue_id", "weight", "occurred_at")
        )
        venue_ids = sorted({v for _, v, _, _ in visits})
        venue_row = {v: i for i, v in enumerate(venue_ids)}
        venues = Venue.objects.in_bulk(venue_ids)
        categories = sorted({c for v in venues.values() for c in v.categories.values_list("pk", flat=True)})
        category_row = {c: i for i, c in enumerate(categories)}
        prefix = options["name"] + "_"

        def write(name: str, rows: list[tuple[object, ...]]) -> None:
            (directory / f"{prefix}{name}.txt").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))

        write("data_size", [(len(users), len(venue_ids), len(categories))])
        write("poi_coos", [(venue_row[v], venues[v].location.y, venues[v].location.x) for v in venue_ids])
        write("poi_categories", [(venue_row[v], category_row[c]) for v in venue_ids for c in venues[v].categories.values_list("pk", flat=True)])
        friends = Connection.objects.filter(status="accepted").filter(Q(from_user_id__in=users.tolist()) & Q(to_user_id__in=users.tolist()))
        write("social_relations", [(user_row[a], user_row[b]) for a, b in friends.values_list("from_user_id", "to_user_id")])
        write("train", [(user_row[u], venue_row[v], max(int(round(w)), 1)) for u, v, w, _ in visits])
        write("check_ins", [(user_row[u], venue_row[v], float(int(t.timestamp()))) for u, v, _, t in visits])
        self.stdout.write(f"wrote {len(users)} users, {len(venue_ids)} places, {friends.count()} friendships to {directory}")
