"""Geohash encoding and decoding, vectorised, with the real geohash alphabet.

Geohash interleaves longitude and latitude bits (longitude first) and writes them five bits per
character in its own base-32 alphabet, which skips a, i, l and o. Python's ``int(s, 32)`` uses
0-9a-v and so raises on most real geohashes ("wx4g0e" has a "w" and an "x").
"""

from __future__ import annotations

import numpy as np

ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
_DECODE = {ch: i for i, ch in enumerate(ALPHABET)}


def encode_int(lat: np.ndarray, lon: np.ndarray, precision: int) -> np.ndarray:
    """The geohash of each point as an integer of ``5 * precision`` bits (precision <= 12)."""
    if not 1 <= precision <= 12:
        raise ValueError("precision must be between 1 and 12")
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    bits = 5 * precision
    lon_bits = (bits + 1) // 2
    lat_bits = bits // 2
    # Cell index along each axis, clamped so that lat=90 / lon=180 fall in the last cell.
    lon_idx = np.clip(((lon + 180.0) / 360.0 * (1 << lon_bits)).astype(np.int64), 0, (1 << lon_bits) - 1)
    lat_idx = np.clip(((lat + 90.0) / 180.0 * (1 << lat_bits)).astype(np.int64), 0, (1 << lat_bits) - 1)
    code = np.zeros(lat.shape, dtype=np.int64)
    for i in range(bits):
        # Bit i (from the most significant) is a longitude bit when i is even.
        if i % 2 == 0:
            bit = (lon_idx >> (lon_bits - 1 - i // 2)) & 1
        else:
            bit = (lat_idx >> (lat_bits - 1 - i // 2)) & 1
        code = (code << 1) | bit
    return code


def encode(lat: float, lon: float, precision: int = 9) -> str:
    code = int(encode_int(np.array([lat]), np.array([lon]), precision)[0])
    return "".join(ALPHABET[(code >> (5 * (precision - 1 - i))) & 31] for i in range(precision))


def to_int(geohash: str) -> int:
    """The integer a geohash string stands for; raises ValueError on a character outside the alphabet."""
    value = 0
    for ch in geohash.lower():
        try:
            value = (value << 5) | _DECODE[ch]
        except KeyError:
            raise ValueError(f"{ch!r} is not a geohash character (alphabet {ALPHABET})") from None
    return value


def decode(geohash: str) -> tuple[float, float]:
    """Centre (lat, lon) of a geohash cell."""
    code = to_int(geohash)
    bits = 5 * len(geohash)
    lon_bits, lat_bits = (bits + 1) // 2, bits // 2
    lon_idx = lat_idx = 0
    for i in range(bits):
        bit = (code >> (bits - 1 - i)) & 1
        if i % 2 == 0:
            lon_idx = (lon_idx << 1) | bit
        else:
            lat_idx = (lat_idx << 1) | bit
    lat = -90.0 + (lat_idx + 0.5) * 180.0 / (1 << lat_bits)
    lon = -180.0 + (lon_idx + 0.5) * 360.0 / (1 << lon_bits)
    return lat, lon
