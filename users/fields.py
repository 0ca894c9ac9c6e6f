"""A geography point field that refuses coordinates outside the WGS84 range.

PostGIS does not reject an out-of-range geography point: it silently wraps it ("Coordinate
values were coerced into range") so that latitude 95 is stored as 85. A CHECK constraint cannot
catch that, since it only sees the wrapped value. The check therefore lives in the field: every
ORM write (save, create, update, bulk_create) prepares the value through ``get_prep_value`` and
``full_clean`` runs the validator, so a bad point never reaches the database through Django.
Bulk COPY paths validate their arrays before writing.
"""

from __future__ import annotations

from typing import Any

from django.contrib.gis.db import models
from django.contrib.gis.geos import GEOSGeometry
from django.core.exceptions import ValidationError

LATITUDE_RANGE_MESSAGE = "Latitude must be between -90 and 90 degrees."
LONGITUDE_RANGE_MESSAGE = "Longitude must be between -180 and 180 degrees."
NOT_FINITE_MESSAGE = "Coordinates must be finite numbers."


def validate_lonlat(lon: float, lat: float) -> None:
    if not (lon == lon and lat == lat) or lon in (float("inf"), float("-inf")) or lat in (float("inf"), float("-inf")):
        raise ValidationError(NOT_FINITE_MESSAGE, code="not_finite")
    if not -90.0 <= lat <= 90.0:
        raise ValidationError(LATITUDE_RANGE_MESSAGE, code="latitude_range")
    if not -180.0 <= lon <= 180.0:
        raise ValidationError(LONGITUDE_RANGE_MESSAGE, code="longitude_range")


def validate_point(value: Any) -> None:
    if isinstance(value, GEOSGeometry) and value.geom_type == "Point" and not value.empty:
        validate_lonlat(value.x, value.y)


class LonLatPointField(models.PointField):
    """``PointField(geography=True, srid=4326)`` whose coordinates are range-checked."""

    default_validators = [validate_point]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("geography", True)
        kwargs.setdefault("srid", 4326)
        super().__init__(*args, **kwargs)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        validate_point(value)
        return value
