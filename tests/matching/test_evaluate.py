"""The evaluation command, end to end on a small city written in the LBSN layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from matching.ml.evaluate import METHODS

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def small_lbsn(tmp_path: Path) -> Path:
    call_command("generate_city", "--users", "300", "--seed", "3", "--prefix", "ev")
    directory = tmp_path / "city"
    call_command("export_lbsn", str(directory), "--prefix", "ev")
    return directory


def test_evaluate_matching_writes_every_method_and_the_low_activity_cohort(small_lbsn: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "result.json"
    call_command("evaluate_matching", str(small_lbsn), "--epochs", "1", "--k", "10", "--json", str(out))
    result = json.loads(out.read_text())
    assert set(result["methods"]) == set(METHODS)
    for scores in result["methods"].values():
        assert set(scores) == {"recall@10", "ndcg@10", "auc"}
        assert 0.0 <= scores["recall@10"] <= 1.0
    assert result["queries"] > 20 and result["seconds"] > 0
    cohort = result["low_activity"]
    assert cohort["max_friends"] == 3 and cohort["queries"] > 0
    assert 0.0 <= cohort["pipeline"] <= 1.0 and 0.0 <= cohort["calibrated"] <= 1.0
    table = capsys.readouterr().out
    assert "pipeline / best baseline" in table and "with cohort calibration" in table


def test_evaluate_matching_names_a_bad_test_edges_line(small_lbsn: Path, tmp_path: Path) -> None:
    edges = tmp_path / "edges.txt"
    edges.write_text("1 2\n3 x\n")
    with pytest.raises(CommandError, match="edges.txt, line 2"):
        call_command("evaluate_matching", str(small_lbsn), "--test-edges", str(edges), "--epochs", "1")
