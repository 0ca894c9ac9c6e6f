"""The load generator of ``bench_serving`` measures what it claims, against a real HTTP server."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from matching.management.commands.bench_serving import NEARBY_PATH, OPEN_LOOP_GRACE, PHASES, _load_run, _requests_log
from tests.conftest import make_person


class SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # persistent connections, as gunicorn's gthread workers keep
    delay = 0.0
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        time.sleep(self.delay)
        self.seen.append(self.headers.get("Cookie", ""))
        body = b"{}"
        self.send_response(200 if self.path == NEARBY_PATH else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    SlowHandler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def test_open_loop_sends_at_the_rate_as_the_people_given(server: ThreadingHTTPServer) -> None:
    SlowHandler.delay = 0.005
    port = server.server_address[1]
    result, requests = _load_run(port, ["alice", "bob", "carol"], threads=4, seconds=1.0, rate=40)
    assert result["ok"] == result["requests"] == 40 and result["unsent"] == 0
    assert 5 <= result["p50_ms"] < 200
    assert set(SlowHandler.seen) == {"sessionid=alice", "sessionid=bob", "sessionid=carol"}
    # Each request as it went: due every 1/40 s from the start, sent no earlier, answered after.
    dues = [due for due, _, _, _ in requests]
    assert dues == pytest.approx([k / 40 for k in range(40)], abs=1e-6)
    assert all(due <= sent + 1e-6 and sent < answered for due, sent, answered, _ in requests)
    assert {status for *_, status in requests} == {200}


def test_the_requests_log_holds_every_request_of_every_phase(server: ThreadingHTTPServer, tmp_path) -> None:
    SlowHandler.delay = 0.0
    port = server.server_address[1]
    runs = [_load_run(port, ["alice"], threads=1, seconds=0.3, rate=rate) for rate in (None, None, 20, None)]
    path = tmp_path / "requests.csv"
    _requests_log(path, runs)
    lines = path.read_text().splitlines()
    assert lines[0] == "phase,due_s,sent_s,answered_s,latency_ms,status"
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == sum(figures["requests"] for figures, _ in runs)
    assert [r[0] for r in rows if r[0] == "open_loop"] == ["open_loop"] * 6
    assert {r[0] for r in rows} == set(PHASES)
    for _, due, _, answered, latency, status in rows:
        assert float(latency) == pytest.approx((float(answered) - float(due)) * 1000, abs=0.01)
        assert status == "200"


def test_a_server_that_falls_behind_shows_its_queue_and_unsent_requests(
    server: ThreadingHTTPServer,
) -> None:
    SlowHandler.delay = 0.5  # one thread can do 2 requests/s; 40/s are offered
    result, _ = _load_run(server.server_address[1], ["alice"], threads=1, seconds=1.0, rate=40)
    # Latency counts from each request's scheduled time: the queue shows.
    assert result["p99_ms"] > 1000
    assert result["unsent"] > 0 and result["requests"] + result["unsent"] == 40
    assert result["seconds"] < 1.0 + OPEN_LOOP_GRACE + 2


def test_closed_loop_counts_what_the_server_sustains(server: ThreadingHTTPServer) -> None:
    SlowHandler.delay = 0.05
    result, _ = _load_run(server.server_address[1], ["alice"], threads=2, seconds=1.0, rate=None)
    assert 0 < result["rps"] <= 42  # two connections, at least 50 ms each
    assert result["requests"] == result["ok"] >= 2
    assert result["statuses"] == {"200": result["ok"]}


@pytest.mark.django_db
def test_prewarm_loads_what_nearby_reads_into_shared_buffers() -> None:
    from matching.management.commands.bench_serving import _prewarm

    make_person("someone", -79.99, 40.44)
    report = _prewarm()
    assert report["done"] is True, report
    assert report["pages"] > 0 and report["shared_buffers"]


@pytest.mark.django_db
def test_breakdown_times_the_request_and_its_parts() -> None:
    from matching.management.commands.bench_serving import _breakdown

    for i in range(6):
        make_person(f"p{i}", -79.99 + i * 0.001, 40.44)
    report = _breakdown(people=4)
    assert report["people"] == 4
    assert report["total_p50_ms"] > 0 and report["candidates_p50_ms"] > 0 and report["context_p50_ms"] > 0


@pytest.mark.django_db
def test_a_big_city_without_a_model_to_import_is_refused_before_anything_runs() -> None:
    """Training on a million people would take hours: the command says what to pass instead."""
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--model-from"):
        call_command("bench_serving", users=1_000_000)
    from users.models import User

    assert not User.objects.exists()  # no city was generated


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_serving")
def test_paired_nearby_bench_times_both_versions_on_the_same_people() -> None:
    """Against HEAD's nearby.py (the same code) the ratio is about one; a bad commit is refused."""
    import json

    from django.core.management import CommandError, call_command

    from tests.matching.test_refresh import served_city

    served_city()
    out = io.StringIO()
    call_command("bench_nearby_paired", against="HEAD", people=6, stdout=out)
    report = json.loads(out.getvalue())
    assert report["people"] >= 1 and report["this_p50_ms"] > 0 and report["other_p50_ms"] > 0
    assert 0.2 < report["median_ratio_this_over_other"] < 5
    with pytest.raises(CommandError, match="cannot read"):
        call_command("bench_nearby_paired", against="no-such-commit", people=2)
