"""The benchmark command runs end to end on a tiny generated city and leaves it as it was."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from activities.models import Recommendation

pytestmark = pytest.mark.django_db


def test_bench_generates_a_city_times_each_activity_and_rolls_back(tmp_path: Path) -> None:
    out = StringIO()
    report = tmp_path / "bench.json"
    call_command("bench_activity_recommendations", "--users", "300", "--generate", "--activities", "2",
                 "--repeat", "2", "--json", str(report), stdout=out)
    summary = json.loads(report.read_text())["summary"]
    assert summary["users"] == 300 and summary["runs"] == 4 and summary["rankers"] == ["rules"]
    assert summary["median_s"] > 0 and "candidates_sql" in summary["stages_median_s"]
    assert "median" in out.getvalue()
    assert not Recommendation.objects.exists()  # every run rolled back


def test_bench_refuses_a_city_of_another_size() -> None:
    with pytest.raises(CommandError, match="not 1,000"):
        call_command("bench_activity_recommendations", "--users", "1000")
