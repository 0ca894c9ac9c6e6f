from __future__ import annotations

from django import template

from matching.dashboard import Dashboard, dashboard_summary

register = template.Library()


@register.simple_tag
def dashboard() -> Dashboard:
    return dashboard_summary()


@register.filter
def percent(value: float, digits: int = 1) -> str:
    """0.0342 -> "3.4%"."""
    try:
        return f"{100.0 * float(value):.{int(digits)}f}%"
    except (TypeError, ValueError):
        return ""
