"""Per-person CSR rows kept with an embedding set: gathering rows, and spot keys equal to SQL's."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection

from matching.ml.person_rows import gather, spot_keys, spot_unpack


def test_gather_returns_each_rows_values_in_order_with_their_positions() -> None:
    indptr = np.array([0, 2, 2, 5])  # row 0: a b; row 1: nothing; row 2: c d e
    values = np.array([10, 11, 20, 21, 22])
    owner, got = gather(indptr, values, np.array([2, 1, 0, 2]))
    assert owner.tolist() == [0, 0, 0, 2, 2, 3, 3, 3]
    assert got.tolist() == [20, 21, 22, 10, 11, 20, 21, 22]
    owner, got = gather(indptr, np.arange(10).reshape(5, 2), np.array([0]))  # 2-d values
    assert owner.tolist() == [0, 0] and got.tolist() == [[0, 1], [2, 3]]
    owner, got = gather(indptr, values, np.array([1]))
    assert len(owner) == 0 and len(got) == 0


@pytest.mark.django_db
def test_spot_keys_round_as_postgresql_does_and_unpack_exactly() -> None:
    # Ties at the fourth decimal, negative coordinates, the antimeridian and the poles.
    lon = np.array([13.00005, -79.99595, 179.99995, -180.0, 0.00015, 2.35222])
    lat = np.array([52.00005, 40.44065, -89.99995, 90.0, -0.00025, 48.85661])
    day = np.array([20_000, 20_001, 0, 90_000, 1, 20_419])
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT round(ST_X(p) * 1e4), round(ST_Y(p) * 1e4)
               FROM unnest(%s::float8[], %s::float8[]) AS c(x, y), ST_SetSRID(ST_MakePoint(x, y), 4326) AS p""",
            [lon.tolist(), lat.tolist()],
        )
        sql = np.array(cursor.fetchall(), dtype=np.int64)
    keys = spot_keys(day, lon, lat)
    got_day, got_lon, got_lat = spot_unpack(keys)
    assert got_day.tolist() == day.tolist()
    assert np.round(got_lon * 1e4).astype(np.int64).tolist() == sql[:, 0].tolist()
    assert np.round(got_lat * 1e4).astype(np.int64).tolist() == sql[:, 1].tolist()
    assert len(np.unique(keys)) == len(keys)
