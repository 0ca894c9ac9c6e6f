"""The load generator of ``bench_serving`` measures what it claims, against a real HTTP server."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from matching.management.commands.bench_serving import NEARBY_PATH, OPEN_LOOP_GRACE, _load_run
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
    result = _load_run(port, ["alice", "bob", "carol"], threads=4, seconds=1.0, rate=40)
    assert result["ok"] == result["requests"] == 40 and result["unsent"] == 0
    assert 5 <= result["p50_ms"] < 200
    assert set(SlowHandler.seen) == {"sessionid=alice", "sessionid=bob", "sessionid=carol"}


def test_a_server_that_falls_behind_shows_its_queue_and_unsent_requests(
    server: ThreadingHTTPServer,
) -> None:
    SlowHandler.delay = 0.5  # one thread can do 2 requests/s; 40/s are offered
    result = _load_run(server.server_address[1], ["alice"], threads=1, seconds=1.0, rate=40)
    # Latency counts from each request's scheduled time: the queue shows.
    assert result["p99_ms"] > 1000
    assert result["unsent"] > 0 and result["requests"] + result["unsent"] == 40
    assert result["seconds"] < 1.0 + OPEN_LOOP_GRACE + 2


def test_closed_loop_counts_what_the_server_sustains(server: ThreadingHTTPServer) -> None:
    SlowHandler.delay = 0.05
    result = _load_run(server.server_address[1], ["alice"], threads=2, seconds=1.0, rate=None)
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
