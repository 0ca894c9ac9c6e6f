"""The fixed taxonomy of seed 000 section 3.1.5: what people like, do, where, and when.

The slugs are stored in the database and are feature columns of the model, so their order is part
of the feature layout: append new entries at the end, never reorder or rename.
"""

from __future__ import annotations

# 20 interest categories (seed 000 lists the first ten and elides the rest).
INTERESTS: tuple[str, ...] = (
    "sports",
    "music",
    "travel",
    "food",
    "reading",
    "gaming",
    "art",
    "technology",
    "fashion",
    "nature",
    "film",
    "photography",
    "fitness",
    "dance",
    "cooking",
    "pets",
    "volunteering",
    "languages",
    "nightlife",
    "wellness",
)

# 10 activity types an activity belongs to and a person can prefer.
ACTIVITY_TYPES: tuple[str, ...] = (
    "sports",
    "music",
    "travel",
    "food",
    "reading",
    "gaming",
    "art",
    "technology",
    "fashion",
    "nature",
)

# 15 place types (seed 000 lists ten and elides the rest).
PLACE_TYPES: tuple[str, ...] = (
    "urban",
    "suburban",
    "rural",
    "coastal",
    "mountain",
    "park",
    "mall",
    "restaurant",
    "cafe",
    "gym",
    "bar",
    "museum",
    "library",
    "stadium",
    "transit",
)

# Six time preferences: weekday / weekend and the four seasons.
TIME_PREFERENCES: tuple[str, ...] = ("weekday", "weekend", "spring", "summer", "autumn", "winter")


def choices(slugs: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(slug, slug.capitalize()) for slug in slugs]


INTEREST_CHOICES = choices(INTERESTS)
ACTIVITY_TYPE_CHOICES = choices(ACTIVITY_TYPES)
PLACE_TYPE_CHOICES = choices(PLACE_TYPES)
TIME_PREFERENCE_CHOICES = choices(TIME_PREFERENCES)
