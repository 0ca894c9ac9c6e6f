from __future__ import annotations

from django import template

from matching.dashboard import Dashboard, dashboard_summary

register = template.Library()


@register.simple_tag
def dashboard() -> Dashboard:
    return dashboard_summary()
