"""Create (or reset) the three demo logins printed by ``make demo``."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.gis.geos import Point
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from activities.models import Activity
from activities.services.activities import activity_create
from users.models import Availability, Profile, User

# Development-only credentials, printed by the demo. Never used outside a local demo database.
DEMO_ACCOUNTS: tuple[dict[str, Any], ...] = (
    {
        "username": "alice", "password": "alice-demo-2026", "role": "end user",
        "display_name": "Alice", "interests": ["sports", "music", "reading", "nature"],
        "activity_types": ["sports", "reading"], "lonlat": (-79.9959, 40.4406),
    },
    {
        "username": "olivia", "password": "olivia-demo-2026", "role": "organiser",
        "display_name": "Olivia", "interests": ["sports", "fitness", "food"],
        "activity_types": ["sports", "food"], "lonlat": (-79.9530, 40.4443),
    },
    {
        "username": "admin", "password": "admin-demo-2026", "role": "staff",
        "display_name": "Admin", "interests": [], "activity_types": [], "lonlat": None,
    },
)


class Command(BaseCommand):
    help = "Create or reset the demo logins: an end user, an organiser with an activity, a staff user."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        for spec in DEMO_ACCOUNTS:
            user, _ = User.objects.get_or_create(username=spec["username"])
            user.email = f"{spec['username']}@example.com"
            user.is_staff = user.is_superuser = spec["role"] == "staff"
            user.is_active, user.is_suspended, user.is_hidden = True, False, False
            user.set_password(spec["password"])
            user.save()
            lonlat = spec["lonlat"]
            Profile.objects.update_or_create(
                user=user,
                defaults={
                    "display_name": spec["display_name"],
                    "birth_year": 1994,
                    "interests": spec["interests"],
                    "activity_types": spec["activity_types"],
                    "time_preferences": ["weekend"],
                    "languages": ["en"],
                    "discoverable": spec["role"] != "staff",
                    "location": Point(*lonlat, srid=4326) if lonlat else None,
                    "location_updated_at": now if lonlat else None,
                    "last_active_at": now,
                },
            )
            if lonlat:
                Availability.objects.get_or_create(
                    user=user, weekday=5, start_time=dt.time(9), defaults={"end_time": dt.time(17)}
                )
        organiser = User.objects.get(username="olivia")
        if not Activity.objects.filter(organiser=organiser, starts_at__gt=now).exists():
            # Through the service, like a real organiser: publishing queues the recommended
            # participants, which the demo's worker computes as soon as it starts. Next Saturday,
            # 10:00 in the city's time zone, when the demo people are free.
            zone = ZoneInfo(settings.AVAILABILITY_TIME_ZONE)
            local = now.astimezone(zone)
            saturday = local + dt.timedelta(days=(5 - local.weekday()) % 7 or 7)
            starts = saturday.replace(hour=10, minute=0, second=0, microsecond=0)
            activity_create(
                actor=organiser, title="Saturday badminton doubles",
                description="Friendly doubles at the park courts; rackets to lend.",
                category="sports", subtype="fitness", skill_level=3,
                location=Point(-79.9500, 40.4420, srid=4326), starts_at=starts,
                ends_at=starts + dt.timedelta(hours=2), capacity=8,
            )
        for spec in DEMO_ACCOUNTS:
            self.stdout.write(f"  {spec['role']:<9} {spec['username']:<8} password {spec['password']}")
