"""matching.grid: snapping and distances in numpy agree with PostGIS; the radius of nearby
candidates applies to snapped positions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from django.db import connection

from matching.grid import MERCATOR_R, cell_size, distance_m, snapped_distance_m
from matching.services.nearby import _ASKER_SQL, nearby_candidates
from tests.conftest import make_person

pytestmark = pytest.mark.django_db
LON, LAT = -79.9959, 40.4406


@pytest.mark.parametrize("lat", [LAT, -33.87, 59.91, 1.29])
def test_snapped_distances_agree_with_postgis_to_a_metre(lat: float) -> None:
    rng = np.random.default_rng(int(abs(lat) * 100))
    lon0 = 151.2 if lat < 0 else LON
    lon = lon0 + rng.uniform(-0.5, 0.5, 500)
    lats = lat + rng.uniform(-0.4, 0.4, 500)
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT ST_Distance(ST_Transform(ST_SnapToGrid(ST_Transform(
                   ST_SetSRID(ST_MakePoint(x, y), 4326), 3857), %s), 4326)::geography,
                   ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography)
               FROM unnest(%s::float8[], %s::float8[]) WITH ORDINALITY AS t(x, y, i) ORDER BY i""",
            [cell_size(100.0, lat), lon0, lat, lon.tolist(), lats.tolist()],
        )
        postgis = np.array([row[0] for row in cursor.fetchall()])
    ours = snapped_distance_m(lon, lats, lon0, lat, 100.0)
    assert postgis.max() > 30_000  # the whole reach of a nearby search
    np.testing.assert_allclose(ours, postgis, atol=1.0)


def test_distance_across_the_antimeridian_is_short() -> None:
    assert distance_m(np.array([-179.999]), np.array([0.0]), 179.999, 0.0)[0] == pytest.approx(222.6, abs=0.5)


def _cell_centre_lon(lon: float, lat: float) -> float:
    """Longitude of the grid point nearest ``lon`` at latitude ``lat`` (where a position snaps)."""
    cell = cell_size(100.0, lat)
    return math.degrees(round(math.radians(lon) * MERCATOR_R / cell) * cell / MERCATOR_R)


def test_the_radius_applies_to_snapped_positions_not_exact_ones() -> None:
    """Who is within the radius must not reveal more than the grid cell either."""
    me = make_person("me", LON, LAT)
    metre = 1.0 / (111_320.0 * math.cos(math.radians(LAT)))  # degrees of longitude per metre here
    near_centre = _cell_centre_lon(LON + 1000 * metre, LAT)  # a cell about 1 km east
    far_centre = _cell_centre_lon(LON + 2000 * metre, LAT)  # and one about 2 km east
    # The query point is put so that the first cell's centre is 20 m beyond 1 km and the second's
    # 20 m inside 2 km; the people sit 45 m from their cell's centre, on the other side of the line.
    inside_exactly = make_person("inside", near_centre - 45 * metre, LAT)  # exact: 975 m
    outside_exactly = make_person("outside", far_centre + 45 * metre, LAT)  # exact: 2025 m
    query = near_centre - 1020 * metre
    one_km = set(nearby_candidates(me=me.pk, lon=query, lat=LAT, radius_km=1.0).ids.tolist())
    assert inside_exactly.pk not in one_km
    query = far_centre - 1980 * metre
    found = nearby_candidates(me=me.pk, lon=query, lat=LAT, radius_km=2.0)
    two_km = dict(zip(found.ids.tolist(), found.distance_m.tolist(), strict=True))
    assert outside_exactly.pk in two_km and two_km[outside_exactly.pk] == pytest.approx(1980, abs=10)


def test_the_asker_statement_is_prepared_and_django_queries_are_not() -> None:
    """Django turns psycopg's prepared statements off; the nearby statements turn them back on
    for themselves only (planning them every request cost about 7% of a request)."""
    me = make_person("me", LON, LAT)
    make_person("other", LON + 0.001, LAT)
    for _ in range(3):
        nearby_candidates(me=me.pk, lon=LON, lat=LAT, radius_km=5.0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements")
        prepared = cursor.fetchall()
    first_line = _ASKER_SQL.strip().splitlines()[0]
    assert [(statement.strip().splitlines()[0], runs) for statement, runs in prepared] == [(first_line, 3)]
