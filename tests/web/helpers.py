"""Helpers of the page tests."""

from __future__ import annotations

from django.contrib.messages import get_messages
from django.http import HttpResponse


def messages_of(response: HttpResponse) -> list[str]:
    """The flash messages the request behind ``response`` added (and earlier ones not yet shown)."""
    return [str(m) for m in get_messages(response.wsgi_request)]  # type: ignore[attr-defined]
