from __future__ import annotations

from collections.abc import Callable
from zoneinfo import ZoneInfo

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone


class CityTimeZoneMiddleware:
    """Show and read times in the city's time zone (``AVAILABILITY_TIME_ZONE``), the zone people's
    weekly availability is written in: "Saturday 10:00" on a page means 10:00 where they live.
    The database keeps UTC."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.zone = ZoneInfo(settings.AVAILABILITY_TIME_ZONE)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        timezone.activate(self.zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
