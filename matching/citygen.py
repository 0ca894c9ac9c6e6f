"""A synthetic city for demos and scale tests, generated on plain numpy arrays (no Django).

People belong to latent communities. A community is what drives everything observable about its
members: their interests, activity and place preferences, the neighbourhoods they live in, when
they are free, their age and occupation, whom they befriend, which venues they visit and which
activities they organise and join. A matcher that recovers the communities from the observable
columns scores well; one that ignores them (random, or distance only) visibly does not.

Everything here is a pure function of ``CityConfig``: the same seed and sizes give the same arrays
on every run, whatever database ids the rows later receive. People, venues and activities are
addressed by their row index; ``matching.citygen_db`` maps indices to database ids and turns the
codes into column values. The ground truth (``People.community``) is never written to the
database: tests and evaluations regenerate the city from its seed and join on the username, which
encodes the row index (``username_for``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from users.taxonomy import ACTIVITY_TYPES, INTERESTS, PLACE_TYPES, TIME_PREFERENCES

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

# The values of users.models.Gender and Occupation (asserted equal by the tests): this module
# imports no Django, so it cannot read them from the models.
GENDERS: tuple[str, ...] = ("unspecified", "female", "male", "nonbinary")
GENDER_WEIGHTS = (0.05, 0.47, 0.45, 0.03)
OCCUPATIONS: tuple[str, ...] = ("student", "professional", "service", "business", "other")
# Every resident speaks English; a community may share one of these second languages (ISO 639-1).
SECOND_LANGUAGES: tuple[str, ...] = (
    "es", "zh", "hi", "ar", "fr", "de", "ko", "vi", "pt", "it", "pl", "ru",
)
SEASONS: tuple[str, ...] = ("spring", "summer", "autumn", "winter")
# users.models.BIRTH_YEAR_MIN and BIRTH_YEAR_MAX (asserted equal by the tests).
BIRTH_YEAR_MIN, BIRTH_YEAR_MAX = 1900, 2015
# Everybody lives in the same city, so its tier (1 = largest) is one value.
CITY_TIER = 2
# Usernames are the prefix then the person's row index on this many digits at least.
USERNAME_DIGITS = 7

SECONDS_PER_DAY = 86_400
KM_PER_DEGREE_LAT = 111.32
# Thursday 1970-01-01 is weekday 3 when Monday is 0, as in Availability.weekday.
EPOCH_WEEKDAY = 3

FIRST_NAMES: tuple[str, ...] = (
    "Aaliyah", "Aiden", "Alex", "Amara", "Ana", "Andre", "Avery", "Ben", "Bianca", "Caleb",
    "Camila", "Casey", "Chloe", "Daniel", "Deja", "Devon", "Diego", "Elena", "Eli", "Emma",
    "Ethan", "Fatima", "Gabriel", "Grace", "Hannah", "Hiro", "Imani", "Isaac", "Jada", "Jamal",
    "Jasmine", "Jonah", "Jordan", "Julia", "Kai", "Keisha", "Leo", "Lily", "Lucas", "Maya",
    "Mateo", "Mia", "Morgan", "Nadia", "Noah", "Nora", "Omar", "Priya", "Quinn", "Rafael",
    "Riley", "Rosa", "Sam", "Sara", "Sofia", "Theo", "Tyler", "Uma", "Victor", "Wei",
    "Xavier", "Yara", "Yusuf", "Zoe",
)
LAST_NAMES: tuple[str, ...] = (
    "Anderson", "Baker", "Brown", "Chen", "Clark", "Costa", "Davis", "Diaz", "Evans", "Fischer",
    "Garcia", "Green", "Haddad", "Hall", "Harris", "Hernandez", "Hill", "Ivanova", "Jackson",
    "Johnson", "Kim", "King", "Kowalski", "Lee", "Lewis", "Lopez", "Martin", "Martinez",
    "Miller", "Moore", "Murphy", "Nguyen", "Novak", "O'Brien", "Okafor", "Patel", "Perez",
    "Phillips", "Ramirez", "Reed", "Roberts", "Robinson", "Rodriguez", "Rossi", "Sanchez",
    "Schmidt", "Scott", "Shah", "Singh", "Smith", "Sullivan", "Taylor", "Thomas", "Thompson",
    "Torres", "Walker", "Wang", "Washington", "White", "Williams", "Wilson", "Wright", "Young",
    "Zielinski",
)
# Pittsburgh-flavoured, since the default centre is Pittsburgh; a larger city reuses them with a
# Roman numeral ("Shadyside II").
NEIGHBOURHOOD_NAMES: tuple[str, ...] = (
    "Downtown", "Strip District", "Lawrenceville", "Bloomfield", "Shadyside", "Oakland",
    "Squirrel Hill", "Greenfield", "Hazelwood", "South Side", "Mount Washington", "Beechview",
    "Brookline", "Carrick", "Allentown", "Knoxville", "Troy Hill", "Spring Garden", "North Shore",
    "Manchester", "Brighton Heights", "Observatory Hill", "Polish Hill", "Garfield",
    "East Liberty", "Highland Park", "Morningside", "Stanton Heights", "Point Breeze",
    "Regent Square", "Swisshelm Park", "Homewood", "Larimer", "Friendship", "Crafton Heights",
    "Sheraden", "Elliott", "West End", "Banksville", "Dormont", "Mount Lebanon", "Bethel Park",
    "Millvale", "Etna", "Sharpsburg", "Aspinwall", "Wilkinsburg", "Edgewood", "Swissvale",
    "Homestead", "Munhall", "West Mifflin", "McKees Rocks", "Bellevue", "Avalon", "Sewickley",
    "Fox Chapel", "Oakmont", "Penn Hills", "Monroeville",
)
_ROMAN = ("", " II", " III", " IV", " V", " VI", " VII", " VIII", " IX", " X")

# What each place type is for: a venue's categories (and so the interests its visits reveal)
# come from this list, the first entry always.
PLACE_TYPE_INTERESTS: dict[str, tuple[str, ...]] = {
    "urban": ("art", "photography", "nightlife", "food"),
    "suburban": ("pets", "cooking", "volunteering"),
    "rural": ("nature", "pets", "volunteering"),
    "coastal": ("nature", "travel", "photography"),
    "mountain": ("nature", "fitness", "photography"),
    "park": ("nature", "sports", "pets", "fitness", "wellness"),
    "mall": ("fashion", "food", "film", "gaming"),
    "restaurant": ("food", "cooking"),
    "cafe": ("reading", "languages", "technology", "food", "gaming"),
    "gym": ("fitness", "sports", "wellness", "dance"),
    "bar": ("nightlife", "music", "dance"),
    "museum": ("art", "photography", "film"),
    "library": ("reading", "languages", "technology"),
    "stadium": ("sports", "music"),
    "transit": ("travel", "languages"),
}
# How common each place type is city-wide (a neighbourhood has its own mix around this).
PLACE_TYPE_WEIGHTS: dict[str, float] = {
    "urban": 0.07, "suburban": 0.05, "rural": 0.03, "coastal": 0.03, "mountain": 0.03,
    "park": 0.10, "mall": 0.03, "restaurant": 0.18, "cafe": 0.12, "gym": 0.07, "bar": 0.10,
    "museum": 0.03, "library": 0.04, "stadium": 0.01, "transit": 0.05,
}
# Venue names: {s} is a surname, {h} the neighbourhood.
VENUE_NAME_TEMPLATES: dict[str, tuple[str, ...]] = {
    "urban": ("{s} Plaza", "{h} Commons", "{s} Square"),
    "suburban": ("{s} Community Center", "{h} Rec Center"),
    "rural": ("{s} Farm", "{s} Orchard"),
    "coastal": ("{h} Riverfront", "{s} Boathouse", "{s} Landing"),
    "mountain": ("{s} Overlook", "{s} Trailhead"),
    "park": ("{s} Park", "{h} Park", "{s} Gardens"),
    "mall": ("{h} Mall", "{s} Galleria"),
    "restaurant": ("{s}'s Kitchen", "{s}'s Diner", "{s} Bistro", "{s}'s Grill"),
    "cafe": ("{s}'s Coffee", "{s} Espresso Bar", "{s}'s Tea Room"),
    "gym": ("{s} Fitness", "{h} Climbing Gym", "{s}'s Boxing Club"),
    "bar": ("{s}'s Tavern", "{s} Taproom", "{s} Jazz Bar"),
    "museum": ("{s} Museum", "{h} Art Gallery", "{s} Science Center"),
    "library": ("{h} Branch Library", "{s} Reading Room"),
    "stadium": ("{s} Field", "{s} Arena"),
    "transit": ("{h} Station", "{s} Street Station"),
}
ACTIVITY_TITLES: dict[str, tuple[str, ...]] = {
    "sports": ("Pickup soccer", "Tennis doubles", "Sunday bike ride", "Basketball run"),
    "music": ("Open jam session", "Choir rehearsal", "Vinyl listening night"),
    "travel": ("Day-trip planning meetup", "Travel stories night"),
    "food": ("Dumpling night", "Taco crawl", "Potluck dinner"),
    "reading": ("Book club", "Poetry reading", "Silent reading hour"),
    "gaming": ("Board game night", "Co-op video games", "Chess meetup"),
    "art": ("Sketch crawl", "Watercolour workshop", "Gallery walk"),
    "technology": ("Hack night", "Python study group", "Maker meetup"),
    "fashion": ("Thrift swap", "Sewing circle"),
    "nature": ("Trail hike", "Birdwatching walk", "River clean-up"),
}


@dataclass(frozen=True)
class AvailabilityPattern:
    """A typical free time: which weekdays, when it may start and how long it lasts (minutes)."""

    name: str
    weekdays: tuple[int, ...]
    earliest_start: int
    latest_start: int
    min_minutes: int
    max_minutes: int


# Times are local to the city, on a 30-minute grid; none runs past 23:30, so end > start always.
AVAILABILITY_PATTERNS: tuple[AvailabilityPattern, ...] = (
    AvailabilityPattern("weekday evenings", (0, 1, 2, 3, 4), 17 * 60 + 30, 19 * 60 + 30, 120, 210),
    AvailabilityPattern("weekday lunch", (0, 1, 2, 3, 4), 11 * 60 + 30, 12 * 60 + 30, 60, 90),
    AvailabilityPattern("early mornings", (0, 1, 2, 3, 4, 5), 6 * 60, 7 * 60 + 30, 60, 120),
    AvailabilityPattern("weekend mornings", (5, 6), 8 * 60, 10 * 60, 120, 240),
    AvailabilityPattern("weekend afternoons", (5, 6), 13 * 60, 15 * 60, 120, 240),
    AvailabilityPattern("late nights", (3, 4, 5), 20 * 60, 21 * 60 + 30, 90, 120),
)
LATEST_END_MINUTE = 23 * 60 + 30


@dataclass(frozen=True)
class CityConfig:
    """What to generate. Sizes left as None scale with ``users`` (see the properties)."""

    users: int
    seed: int = 0
    # The reference time in Unix seconds: visits lie before it, activities after it. Fixed by
    # default so the arrays do not depend on the clock; the command passes today's date.
    now: int = 1_767_225_600  # 2026-01-01T00:00:00Z
    activities: int | None = None
    venues: int | None = None
    communities: int | None = None
    neighbourhoods: int | None = None
    # Near the Pittsburgh yelp sample, so imported and generated data share a map.
    centre_lon: float = -79.99
    centre_lat: float = 40.44
    # Availability is in local time; timestamps are UTC. A fixed offset (no daylight saving)
    # keeps the generator free of time-zone databases.
    utc_offset_hours: float = -5.0
    # Average number of friends per person before duplicate pairs are merged.
    mean_degree: float = 8.0

    def __post_init__(self) -> None:
        if self.users < 10:
            raise ValueError("a city needs at least 10 people")
        for name in ("activities", "venues", "communities", "neighbourhoods"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if not (-180.0 <= self.centre_lon <= 180.0 and -85.0 <= self.centre_lat <= 85.0):
            raise ValueError("the centre must be a longitude and latitude in degrees")

    @property
    def n_communities(self) -> int:
        # About 3 * sqrt(N) people each: 6 communities of 50 at 300 people, 333 of 3,000 at 1M.
        return self.communities or int(np.clip(round(math.sqrt(self.users) / 3), 4, 400))

    @property
    def n_neighbourhoods(self) -> int:
        return self.neighbourhoods or int(np.clip(round(math.sqrt(self.users) / 5), 3, 120))

    @property
    def n_venues(self) -> int:
        # At least two per neighbourhood so that every neighbourhood has somewhere to go.
        default = int(np.clip(self.users // 40, 40, 100_000))
        return max(self.venues or default, 2 * self.n_neighbourhoods)

    @property
    def n_activities(self) -> int:
        return self.activities or max(10, self.users // 100)


@dataclass
class Neighbourhoods:
    name: NDArray[np.str_]  # (H,)
    lon: FloatArray  # (H,) centre
    lat: FloatArray  # (H,)
    radius_km: FloatArray  # (H,) standard deviation of homes around the centre


@dataclass
class Communities:
    """The latent ground truth: each row is one community's preferences."""

    interest_pref: FloatArray  # (K, 20) over INTERESTS, sums to 1
    activity_pref: FloatArray  # (K, 10) over ACTIVITY_TYPES
    place_pref: FloatArray  # (K, 15) over PLACE_TYPES
    season_pref: FloatArray  # (K, 4) over SEASONS
    home_mix: FloatArray  # (K, H) over neighbourhoods
    pattern_mix: FloatArray  # (K, P) over AVAILABILITY_PATTERNS
    age_mean: FloatArray  # (K,)
    age_sd: FloatArray  # (K,)
    occupation_mix: FloatArray  # (K, 5) over OCCUPATIONS
    second_language: IntArray  # (K,) index into SECOND_LANGUAGES
    second_language_rate: FloatArray  # (K,)


@dataclass
class People:
    """One row per person; codes index the tuples of this module and of users.taxonomy."""

    community: IntArray
    neighbourhood: IntArray
    lon: FloatArray
    lat: FloatArray
    first_name: IntArray  # into FIRST_NAMES
    last_name: IntArray  # into LAST_NAMES
    gender: IntArray  # into GENDERS
    birth_year: IntArray
    education: IntArray  # 0 (unknown) to 5
    income_band: IntArray  # 0 (unknown) to 5
    occupation: IntArray  # into OCCUPATIONS
    marital_status: IntArray  # 0 to 4, as users.models.MaritalStatus
    years_in_city: IntArray
    second_language: IntArray  # into SECOND_LANGUAGES, -1 for none
    interests: BoolArray  # (N, 20)
    activity_types: BoolArray  # (N, 10)
    place_types: BoolArray  # (N, 15)
    time_preferences: BoolArray  # (N, 6) over TIME_PREFERENCES
    discoverable: BoolArray
    sociability: FloatArray  # mean 1: scales friendships, visits and organising
    date_joined: IntArray  # Unix seconds
    last_active_at: IntArray  # Unix seconds

    def __len__(self) -> int:
        return len(self.community)


@dataclass
class Slots:
    """Weekly availability, sorted by (person, weekday, start); unique per that key."""

    person: IntArray
    weekday: IntArray  # 0 = Monday
    start_minute: IntArray  # local time, minutes after midnight
    end_minute: IntArray


@dataclass
class Venues:
    name: NDArray[np.str_]
    lon: FloatArray
    lat: FloatArray
    neighbourhood: IntArray  # sorted ascending: venues of a neighbourhood are contiguous
    place_type: IntArray  # into PLACE_TYPES
    popularity: FloatArray
    # The venue's categories as (venue, interest) pairs, one Category per interest.
    category_venue: IntArray
    category_interest: IntArray  # into INTERESTS

    def __len__(self) -> int:
        return len(self.name)


@dataclass
class Friendships:
    """Accepted connections, one per unordered pair; ``a`` asked, ``b`` accepted."""

    a: IntArray
    b: IntArray
    created_at: IntArray
    responded_at: IntArray

    def __len__(self) -> int:
        return len(self.a)


@dataclass
class Visits:
    """Venue visits sorted by (person, time); unique per (person, venue, time)."""

    person: IntArray
    venue: IntArray
    occurred_at: IntArray

    def __len__(self) -> int:
        return len(self.person)


@dataclass
class Pings:
    person: IntArray
    lon: FloatArray
    lat: FloatArray
    recorded_at: IntArray
    from_visit: BoolArray  # source "visit" (at a venue) rather than "device" (near home)

    def __len__(self) -> int:
        return len(self.person)


@dataclass
class Activities:
    organiser: IntArray
    venue: IntArray
    category: IntArray  # into ACTIVITY_TYPES
    subtype: IntArray  # into INTERESTS, -1 for none
    skill_level: IntArray
    capacity: IntArray
    recruit_radius_km: FloatArray
    starts_at: IntArray
    ends_at: IntArray
    created_at: IntArray
    title: NDArray[np.str_]
    description: NDArray[np.str_]
    lon: FloatArray
    lat: FloatArray

    def __len__(self) -> int:
        return len(self.organiser)


@dataclass
class Participations:
    activity: IntArray
    person: IntArray
    joined_at: IntArray

    def __len__(self) -> int:
        return len(self.activity)


@dataclass
class City:
    config: CityConfig
    neighbourhoods: Neighbourhoods
    communities: Communities
    people: People
    slots: Slots
    venues: Venues
    friendships: Friendships
    visits: Visits
    pings: Pings
    activities: Activities
    participations: Participations


def username_for(prefix: str, index: int) -> str:
    """The username of person ``index``: the join key between the database and the arrays."""
    return f"{prefix}{index:0{USERNAME_DIGITS}d}"


def city_generate(config: CityConfig) -> City:
    """Generate a whole city from its config, deterministically.

    1. Lay out neighbourhoods: a downtown at the centre, the rest scattered over a disc whose
       area grows with their number; each is a Gaussian cluster of homes a kilometre or so wide.
    2. Draw communities: concentrated (Dirichlet) preferences over interests, and from them
       activity types and place types; a home neighbourhood and the ones around it; one or two
       availability patterns; an age, occupation mix and possibly a shared second language.
    3. Draw people: a community each (sizes vary), then everything else from their community:
       home, interest sets (weighted sampling without replacement), demographics.
    4. Weekly availability: one to four slots from the community's patterns.
    5. Venues: spread over neighbourhoods in proportion to residents, with a neighbourhood-specific
       mix of place types; categories are the interests their place type serves.
    6. Friendships from three kinds of ties, mostly the first: within the community and close by,
       within the neighbourhood whatever the community, and a few random ones.
    7. Visits: a person picks a neighbourhood by distance from home, then a venue there by the
       community's taste for its place type and categories (10 % at random anywhere), at a time
       inside one of their availability slots, in the last six months.
    8. Location pings: one device ping near home, plus the latest one to three visits.
    9. Activities organised by sociable people at venues they would visit, starting in their own
       free time within five weeks; participants are nearby members of the organiser's community.

    Each step draws from its own random stream (``SeedSequence.spawn``), so changing one step
    leaves the others' draws as they were.
    """
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(9)]
    hoods = _neighbourhoods(config, streams[0])
    communities = _communities(config, hoods, streams[1])
    people = _people(config, hoods, communities, streams[2])
    slots = _slots(config, people, communities, streams[3])
    venues = _venues(config, hoods, people, streams[4])
    friendships = _friendships(config, people, streams[5])
    sampler = _VenueSampler(config, hoods, communities, venues)
    visits = _visits(config, people, slots, venues, sampler, streams[6])
    pings = _pings(people, visits, venues, streams[7])
    activities, participations = _activities(
        config, people, slots, venues, hoods, sampler, streams[8]
    )
    return City(
        config=config,
        neighbourhoods=hoods,
        communities=communities,
        people=people,
        slots=slots,
        venues=venues,
        friendships=friendships,
        visits=visits,
        pings=pings,
        activities=activities,
        participations=participations,
    )


# -- geometry ---------------------------------------------------------------------------------


def to_km(config: CityConfig, lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Local plane coordinates (x east, y north) in km around the centre: exact enough in a city."""
    cos_lat = math.cos(math.radians(config.centre_lat))
    x = (np.asarray(lon) - config.centre_lon) * KM_PER_DEGREE_LAT * cos_lat
    y = (np.asarray(lat) - config.centre_lat) * KM_PER_DEGREE_LAT
    return x, y


def to_lonlat(config: CityConfig, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    cos_lat = math.cos(math.radians(config.centre_lat))
    lon = config.centre_lon + np.asarray(x) / (KM_PER_DEGREE_LAT * cos_lat)
    lat = config.centre_lat + np.asarray(y) / KM_PER_DEGREE_LAT
    return lon, lat


def distance_km(
    config: CityConfig, lon1: FloatArray, lat1: FloatArray, lon2: FloatArray, lat2: FloatArray
) -> FloatArray:
    x1, y1 = to_km(config, lon1, lat1)
    x2, y2 = to_km(config, lon2, lat2)
    return np.hypot(x1 - x2, y1 - y2)


def _morton(x: FloatArray, y: FloatArray, cell_km: float = 0.05) -> IntArray:
    """Z-order code of 50 m cells: sorting by it keeps near points near in the order."""

    def spread(v: IntArray) -> IntArray:
        v = v & 0xFFFF
        v = (v | (v << 8)) & 0x00FF00FF
        v = (v | (v << 4)) & 0x0F0F0F0F
        v = (v | (v << 2)) & 0x33333333
        return (v | (v << 1)) & 0x55555555

    qx = np.clip(((x - x.min()) / cell_km).astype(np.int64), 0, 0xFFFF)
    qy = np.clip(((y - y.min()) / cell_km).astype(np.int64), 0, 0xFFFF)
    return spread(qx) | (spread(qy) << 1)


# -- sampling helpers -------------------------------------------------------------------------


class _Categorical:
    """Many categorical distributions (rows of ``probs``) sampled at once by one searchsorted.

    Row r's cumulative probabilities are shifted by r, so one sorted array holds every row and
    ``r + u`` (u uniform in [0, 1)) falls inside row r's stretch.
    """

    def __init__(self, probs: FloatArray) -> None:
        probs = np.asarray(probs, dtype=np.float64)
        cum = np.cumsum(probs, axis=1)
        cum /= cum[:, -1:]
        cum[:, -1] = 1.0  # exactly 1, so no draw falls past the row's end
        self.width = probs.shape[1]
        self.keys = (cum + np.arange(len(probs))[:, None]).ravel()

    def draw(self, rng: np.random.Generator, rows: IntArray) -> IntArray:
        rows = np.asarray(rows, dtype=np.int64)
        found = np.searchsorted(self.keys, rows + rng.random(len(rows)), side="right")
        drawn: IntArray = np.minimum(found - rows * self.width, self.width - 1)
        return drawn


def _choose_sets(
    rng: np.random.Generator, probs: FloatArray, rows: IntArray, low: int, high: int
) -> BoolArray:
    """Each person draws ``low``..``high`` distinct columns weighted by ``probs[rows]``.

    Gumbel top-k: adding Gumbel noise to log-probabilities and keeping the k largest is weighted
    sampling without replacement, done for all rows at once.
    """
    n, m = len(rows), probs.shape[1]
    k = rng.integers(low, high + 1, n)
    log_p = np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)
    chosen = np.empty((n, m), dtype=bool)
    chunk = 250_000  # bounds the (chunk, m) float buffers
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        u = np.maximum(rng.random((hi - lo, m), dtype=np.float32), np.float32(1e-7))
        g = log_p[rows[lo:hi]] - np.log(-np.log(u))
        kth = -np.sort(-g, axis=1)[np.arange(hi - lo), k[lo:hi] - 1]
        # k = 0 would make the smallest value the threshold and choose everything.
        chosen[lo:hi] = (g >= kth[:, None]) & (k[lo:hi] > 0)[:, None]
    return chosen


def _mix_uniform(probs: FloatArray, share: float) -> FloatArray:
    """Blend with the uniform distribution: nobody's tastes are entirely their community's."""
    mixed: FloatArray = (1.0 - share) * probs + share / probs.shape[-1]
    return mixed


def _pick_true(rng: np.random.Generator, mask: BoolArray) -> IntArray:
    """A uniformly random True column of each row (each row must have one)."""
    picked: IntArray = np.argmax(np.where(mask, rng.random(mask.shape), -1.0), axis=1)
    return picked


def _day_and_weekday(config: CityConfig) -> tuple[int, int]:
    """Today's local day number (days since 1970-01-01) and its weekday (0 = Monday)."""
    day = int((config.now + config.utc_offset_hours * 3600) // SECONDS_PER_DAY)
    return day, (day + EPOCH_WEEKDAY) % 7


def _local_to_utc(config: CityConfig, day: IntArray, minute: IntArray) -> IntArray:
    local = day.astype(np.int64) * SECONDS_PER_DAY + minute.astype(np.int64) * 60
    return local - int(round(config.utc_offset_hours * 3600))


def _distinct(values: IntArray) -> IntArray:
    """Sorted distinct values: np.unique, without its hash-based path (10x slower here)."""
    values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def _segments(sorted_keys: IntArray) -> tuple[IntArray, IntArray]:
    """For each position of a sorted key array: where its run of equal keys starts, and its size."""
    n = len(sorted_keys)
    starts_mask = np.ones(n, dtype=bool)
    starts_mask[1:] = sorted_keys[1:] != sorted_keys[:-1]
    run_starts = np.flatnonzero(starts_mask)
    run_sizes = np.diff(np.append(run_starts, n))
    run_of = np.cumsum(starts_mask) - 1
    return run_starts[run_of], run_sizes[run_of]


# -- the steps --------------------------------------------------------------------------------


def _neighbourhoods(config: CityConfig, rng: np.random.Generator) -> Neighbourhoods:
    h = config.n_neighbourhoods
    city_radius_km = 2.5 * math.sqrt(h)  # 3 neighbourhoods: 4 km; 120: 27 km, a metro area
    r = city_radius_km * np.sqrt(rng.random(h))
    theta = rng.random(h) * 2 * math.pi
    x, y = r * np.cos(theta), r * np.sin(theta)
    x[0] = y[0] = 0.0  # downtown
    lon, lat = to_lonlat(config, x, y)
    names = np.array(
        [
            NEIGHBOURHOOD_NAMES[i % len(NEIGHBOURHOOD_NAMES)]
            + _ROMAN[min(i // len(NEIGHBOURHOOD_NAMES), len(_ROMAN) - 1)]
            for i in range(h)
        ]
    )
    return Neighbourhoods(name=names, lon=lon, lat=lat, radius_km=rng.uniform(0.6, 1.5, h))


def _communities(
    config: CityConfig, hoods: Neighbourhoods, rng: np.random.Generator
) -> Communities:
    k, h = config.n_communities, len(hoods.lon)
    # A small Dirichlet concentration gives each community a handful of dominant interests.
    interest_pref = rng.dirichlet(np.full(len(INTERESTS), 0.25), k)
    activity_index = [INTERESTS.index(a) for a in ACTIVITY_TYPES]
    activity_pref = interest_pref[:, activity_index] + 0.5 * rng.dirichlet(
        np.full(len(ACTIVITY_TYPES), 0.3), k
    )
    activity_pref /= activity_pref.sum(axis=1, keepdims=True)
    # Places are liked for what one does there, plus a taste of the community's own.
    serves = np.zeros((len(INTERESTS), len(PLACE_TYPES)))
    for j, place in enumerate(PLACE_TYPES):
        for interest in PLACE_TYPE_INTERESTS[place]:
            serves[INTERESTS.index(interest), j] = 1.0
    place_affinity = interest_pref @ serves
    place_affinity /= place_affinity.sum(axis=1, keepdims=True)
    place_pref = 0.6 * place_affinity + 0.4 * rng.dirichlet(np.full(len(PLACE_TYPES), 0.4), k)

    # Home: a primary neighbourhood and, fading with distance, the ones around it.
    hx, hy = to_km(config, hoods.lon, hoods.lat)
    primary = rng.integers(0, h, k)
    d = np.hypot(hx[primary][:, None] - hx[None, :], hy[primary][:, None] - hy[None, :])
    kernel = np.exp(-d / 2.0)
    home_mix = _mix_uniform(kernel / kernel.sum(axis=1, keepdims=True), 0.1)

    pattern_mix = rng.dirichlet(np.full(len(AVAILABILITY_PATTERNS), 0.3), k)
    ages, age_shares = [21.0, 27.0, 33.0, 40.0, 50.0, 63.0], [0.15, 0.25, 0.2, 0.17, 0.13, 0.1]
    age_mean = rng.choice(np.array(ages), k, p=age_shares)
    age_sd = rng.uniform(3.0, 8.0, k)
    # Young communities are mostly students; the rest share out the other occupations.
    student = np.clip((26.0 - age_mean) / 6.0, 0.02, 0.8)
    others = rng.dirichlet(np.array([2.0, 2.0, 1.5, 1.0]), k)
    occupation_mix = np.column_stack([student, (1.0 - student)[:, None] * others])
    return Communities(
        interest_pref=interest_pref,
        activity_pref=activity_pref,
        place_pref=place_pref,
        season_pref=rng.dirichlet(np.full(len(SEASONS), 0.5), k),
        home_mix=home_mix,
        pattern_mix=pattern_mix,
        age_mean=age_mean,
        age_sd=age_sd,
        occupation_mix=occupation_mix,
        second_language=rng.integers(0, len(SECOND_LANGUAGES), k),
        second_language_rate=rng.uniform(0.0, 0.5, k) ** 2 * 2,  # most communities rarely
    )


def _people(
    config: CityConfig, hoods: Neighbourhoods, com: Communities, rng: np.random.Generator
) -> People:
    n, k = config.users, len(com.age_mean)
    # Community sizes vary (lognormal weights); people are shuffled across row indices, so a
    # username says nothing about a community.
    sizes = rng.lognormal(0.0, 0.5, k)
    community = rng.choice(k, n, p=sizes / sizes.sum())

    neighbourhood = _Categorical(com.home_mix).draw(rng, community)
    hx, hy = to_km(config, hoods.lon, hoods.lat)
    spread = hoods.radius_km[neighbourhood]
    lon, lat = to_lonlat(
        config,
        hx[neighbourhood] + rng.normal(0.0, 1.0, n) * spread,
        hy[neighbourhood] + rng.normal(0.0, 1.0, n) * spread,
    )

    interests = _choose_sets(rng, _mix_uniform(com.interest_pref, 0.15), community, 3, 6)
    activity_types = _choose_sets(rng, _mix_uniform(com.activity_pref, 0.15), community, 1, 4)
    place_types = _choose_sets(rng, _mix_uniform(com.place_pref, 0.15), community, 1, 4)

    now_year = int(str(np.datetime64(config.now, "s"))[:4])
    age = np.clip(np.rint(rng.normal(com.age_mean[community], com.age_sd[community])), 18, 90)
    age = age.astype(np.int64)
    occupation = _Categorical(com.occupation_mix).draw(rng, community)
    # Education and income follow occupation (student, professional, service, business, other),
    # with some noise; 0 means "unknown" and a few people leave it so.
    education_mean = np.array([3.0, 4.2, 2.2, 3.8, 2.5])[occupation]
    education = np.clip(np.rint(rng.normal(education_mean, 0.8)), 1, 5).astype(np.int64)
    education[rng.random(n) < 0.04] = 0
    income_mean = np.array([1.2, 3.8, 2.0, 4.0, 2.2])[occupation] + (age > 40) * 0.5
    income_band = np.clip(np.rint(rng.normal(income_mean, 0.9)), 1, 5).astype(np.int64)
    income_band[rng.random(n) < 0.08] = 0
    # Marital status by age band: under 25, 25 to 40, over 40 (0 = prefers not to say).
    marital_by_band = np.array(
        [
            [0.08, 0.72, 0.15, 0.04, 0.01],
            [0.08, 0.30, 0.28, 0.30, 0.04],
            [0.08, 0.12, 0.12, 0.53, 0.15],
        ]
    )
    band = np.digitize(age, [25, 41])
    marital_status = _Categorical(marital_by_band).draw(rng, band)
    stay = rng.exponential(np.where(occupation == 0, 2.0, 7.0))
    years_in_city = np.clip(np.minimum(np.rint(stay), age - 17), 0, 100).astype(np.int64)
    speaks = rng.random(n) < com.second_language_rate[community]
    second_language = np.where(speaks, com.second_language[community], -1)

    seasons = _choose_sets(rng, _mix_uniform(com.season_pref, 0.2), community, 0, 2)
    time_preferences = np.zeros((n, len(TIME_PREFERENCES)), dtype=bool)
    # Seasons here; weekday and weekend follow from the availability slots (see _slots).
    time_preferences[:, [TIME_PREFERENCES.index(s) for s in SEASONS]] = seasons

    date_joined = config.now - (rng.uniform(1.0, 1000.0, n) * SECONDS_PER_DAY).astype(np.int64)
    idle = (rng.exponential(2.0, n) * SECONDS_PER_DAY).astype(np.int64)
    last_active_at = np.maximum(config.now - idle, date_joined)
    sociability = rng.lognormal(0.0, 0.5, n)
    sociability /= sociability.mean()
    return People(
        community=community,
        neighbourhood=neighbourhood,
        lon=lon,
        lat=lat,
        first_name=rng.integers(0, len(FIRST_NAMES), n),
        last_name=rng.integers(0, len(LAST_NAMES), n),
        gender=rng.choice(len(GENDERS), n, p=GENDER_WEIGHTS),
        birth_year=np.clip(now_year - age, BIRTH_YEAR_MIN, BIRTH_YEAR_MAX),
        education=education,
        income_band=income_band,
        occupation=occupation,
        marital_status=marital_status,
        years_in_city=years_in_city,
        second_language=second_language,
        interests=interests,
        activity_types=activity_types,
        place_types=place_types,
        time_preferences=time_preferences,
        discoverable=rng.random(n) < 0.95,
        sociability=sociability,
        date_joined=date_joined,
        last_active_at=last_active_at,
    )


def _slots(
    config: CityConfig, people: People, com: Communities, rng: np.random.Generator
) -> Slots:
    n = len(people)
    per_person = rng.integers(1, 5, n)
    person = np.repeat(np.arange(n), per_person)
    pattern_probs = _mix_uniform(com.pattern_mix, 0.1)
    pattern = _Categorical(pattern_probs).draw(rng, people.community[person])
    weekday = np.empty(len(person), dtype=np.int64)
    start = np.empty(len(person), dtype=np.int64)
    length = np.empty(len(person), dtype=np.int64)
    for p, spec in enumerate(AVAILABILITY_PATTERNS):
        rows = np.flatnonzero(pattern == p)
        days = np.array(spec.weekdays)
        weekday[rows] = days[rng.integers(0, len(days), len(rows))]
        steps = (spec.latest_start - spec.earliest_start) // 30
        start[rows] = spec.earliest_start + 30 * rng.integers(0, steps + 1, len(rows))
        halves = rng.integers(spec.min_minutes // 30, spec.max_minutes // 30 + 1, len(rows))
        length[rows] = 30 * halves
    end = np.minimum(start + length, LATEST_END_MINUTE)
    # Unique per (person, weekday, start), as the database requires; np.unique also sorts, and
    # the first slot of each person always survives, so everybody keeps at least one.
    key = (person * 7 + weekday) * 48 + start // 30
    _, first = np.unique(key, return_index=True)
    person, weekday, start, end = person[first], weekday[first], start[first], end[first]

    people.time_preferences[person[weekday < 5], TIME_PREFERENCES.index("weekday")] = True
    people.time_preferences[person[weekday >= 5], TIME_PREFERENCES.index("weekend")] = True
    return Slots(person=person, weekday=weekday, start_minute=start, end_minute=end)


def _venues(
    config: CityConfig, hoods: Neighbourhoods, people: People, rng: np.random.Generator
) -> Venues:
    v, h = config.n_venues, len(hoods.lon)
    # Every neighbourhood gets one venue, the rest follow where people live.
    residents = np.bincount(people.neighbourhood, minlength=h).astype(np.float64) + 1.0
    hood = np.concatenate([np.arange(h), rng.choice(h, v - h, p=residents / residents.sum())])
    hood.sort()
    global_mix = np.array([PLACE_TYPE_WEIGHTS[p] for p in PLACE_TYPES])
    own_mix = rng.dirichlet(np.full(len(PLACE_TYPES), 0.5), h)
    hood_mix = 0.5 * global_mix / global_mix.sum() + 0.5 * own_mix
    place_type = _Categorical(hood_mix).draw(rng, hood)
    hx, hy = to_km(config, hoods.lon, hoods.lat)
    spread = 0.8 * hoods.radius_km[hood]
    lon, lat = to_lonlat(
        config,
        hx[hood] + rng.normal(0.0, 1.0, v) * spread,
        hy[hood] + rng.normal(0.0, 1.0, v) * spread,
    )

    # Categories: the first interest of the place type, and half the time one more of its list.
    served = [PLACE_TYPE_INTERESTS[PLACE_TYPES[t]] for t in range(len(PLACE_TYPES))]
    first = np.array([INTERESTS.index(s[0]) for s in served])[place_type]
    n_served = np.array([len(s) for s in served])[place_type]
    extra_at = 1 + (rng.random(v) * (n_served - 1)).astype(np.int64)
    extra_table = np.full((len(PLACE_TYPES), max(len(s) for s in served)), -1)
    for t, s in enumerate(served):
        extra_table[t, : len(s)] = [INTERESTS.index(i) for i in s]
    extra = extra_table[place_type, extra_at]
    has_extra = rng.random(v) < 0.5
    category_venue = np.concatenate([np.arange(v), np.flatnonzero(has_extra)])
    category_interest = np.concatenate([first, extra[has_extra]])
    order = np.lexsort((category_interest, category_venue))

    surnames = rng.integers(0, len(LAST_NAMES), v)
    template_pick = rng.random(v)
    names = []
    for i in range(v):
        templates = VENUE_NAME_TEMPLATES[PLACE_TYPES[place_type[i]]]
        template = templates[int(template_pick[i] * len(templates))]
        names.append(template.format(s=LAST_NAMES[surnames[i]], h=hoods.name[hood[i]]))
    return Venues(
        name=np.array(names),
        lon=lon,
        lat=lat,
        neighbourhood=hood,
        place_type=place_type,
        popularity=rng.lognormal(0.0, 0.7, v),
        category_venue=category_venue[order],
        category_interest=category_interest[order],
    )


def _friendships(config: CityConfig, people: People, rng: np.random.Generator) -> Friendships:
    """Ties along two spatial orders plus random ones; see step 6 of ``city_generate``."""
    n = len(people)
    x, y = to_km(config, people.lon, people.lat)
    z = _morton(x, y)
    # Shares of each person's stubs: within the community nearby, within the neighbourhood,
    # anywhere. Each stub is half a friendship, so mean_degree / 2 stubs per person.
    shares = (0.78, 0.12, 0.10)
    stubs = [rng.poisson(people.sociability * config.mean_degree / 2 * s) for s in shares]

    def along(
        order: IntArray, group: IntArray, counts: IntArray, mean_offset: float
    ) -> tuple[IntArray, IntArray]:
        # People sorted so that a group is contiguous and, inside it, near neighbours in space
        # are near in the order; a friend is a few places away, wrapping inside the group.
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        start, size = _segments(group[order])
        who = np.repeat(np.arange(n), counts)
        pos = position[who]
        sign = rng.choice(np.array([-1, 1]), len(who))
        offset = rng.geometric(1.0 / mean_offset, len(who)) * sign
        s, m = start[pos], size[pos]
        partner = order[s + (pos - s + offset) % m]
        return who, partner

    by_community = np.lexsort((z, people.neighbourhood, people.community))
    a1, b1 = along(by_community, people.community, stubs[0], 6.0)
    by_hood = np.lexsort((z, people.neighbourhood))
    a2, b2 = along(by_hood, people.neighbourhood, stubs[1], 6.0)
    a3 = np.repeat(np.arange(n), stubs[2])
    b3 = rng.integers(0, n, len(a3))
    a, b = np.concatenate([a1, a2, a3]), np.concatenate([b1, b2, b3])

    # One row per unordered pair and no self-loops: the database's unique (least, greatest).
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    pair = _distinct(lo * n + hi)
    lo, hi = pair // n, pair % n
    flip = rng.random(len(pair)) < 0.5  # who asked whom
    asker, accepter = np.where(flip, hi, lo), np.where(flip, lo, hi)

    both_joined = np.maximum(people.date_joined[lo], people.date_joined[hi])
    since = rng.random(len(pair)) * 0.95 * (config.now - both_joined)
    created_at = both_joined + since.astype(np.int64)
    wait = np.minimum(rng.exponential(0.5, len(pair)) * SECONDS_PER_DAY, config.now - created_at)
    return Friendships(
        a=asker, b=accepter, created_at=created_at, responded_at=created_at + wait.astype(np.int64)
    )


class _VenueSampler:
    """Where a member of community k living in neighbourhood h goes out.

    1. A neighbourhood g by distance from h (P(g | h) falls off over ~3 km; home counts thrice).
    2. A venue inside g by the community's weight for it: popularity times the squared affinity
       of its place type and categories with the community's preferences.
    Both are single searchsorted calls: venues are sorted by neighbourhood, so the venues of
    g are one contiguous stretch of each community's row of cumulative weights.
    """

    def __init__(
        self, config: CityConfig, hoods: Neighbourhoods, com: Communities, venues: Venues
    ) -> None:
        hx, hy = to_km(config, hoods.lon, hoods.lat)
        d = np.hypot(hx[:, None] - hx[None, :], hy[:, None] - hy[None, :])
        travel = np.exp(-d / 3.0)
        travel[np.diag_indices_from(travel)] *= 3.0
        self.travel = _Categorical(travel / travel.sum(axis=1, keepdims=True))

        place = com.place_pref / com.place_pref.max(axis=1, keepdims=True)
        interest = com.interest_pref / com.interest_pref.max(axis=1, keepdims=True)
        # (K, V): the community's affinity with the venue's best-liked category. Pairs are
        # sorted by venue and every venue has one, so a reduceat per venue does it.
        first_pair = np.searchsorted(venues.category_venue, np.arange(len(venues)))
        taste = np.maximum.reduceat(interest[:, venues.category_interest], first_pair, axis=1)
        affinity = 0.03 + 0.5 * place[:, venues.place_type] + 0.5 * taste
        weight = venues.popularity[None, :] * affinity**2

        h, k, v = len(hoods.lon), len(com.age_mean), len(venues)
        bounds = np.searchsorted(venues.neighbourhood, np.arange(h + 1))
        cum = np.cumsum(weight, axis=1)
        del weight, taste
        seg_lo, seg_hi = bounds[venues.neighbourhood], bounds[venues.neighbourhood + 1]
        before = np.where(seg_lo > 0, cum[:, np.maximum(seg_lo - 1, 0)], 0.0)
        within = (cum - before) / (cum[:, seg_hi - 1] - before)
        within[:, seg_hi - 1 == np.arange(v)] = 1.0  # each stretch ends at exactly 1
        self.keys = ((np.arange(k) * h)[:, None] + venues.neighbourhood[None, :] + within).ravel()
        self.h, self.v = h, v

    def draw(
        self, rng: np.random.Generator, community: IntArray, home: IntArray
    ) -> IntArray:
        target = self.travel.draw(rng, home)
        query = community * self.h + target + rng.random(len(community))
        # numpy's binary search starts from the previous answer when the needles ascend: sorted
        # needles walk the large key array in order instead of missing the cache at each step.
        order = np.argsort(query)
        found = np.empty(len(query), dtype=np.int64)
        found[order] = np.searchsorted(self.keys, query[order], side="right")
        drawn: IntArray = np.minimum(found - community * self.v, self.v - 1)
        return drawn


def _visits(
    config: CityConfig,
    people: People,
    slots: Slots,
    venues: Venues,
    sampler: _VenueSampler,
    rng: np.random.Generator,
) -> Visits:
    n = len(people)
    count = np.minimum(1 + rng.poisson(3.0 * people.sociability), 20)
    person = np.repeat(np.arange(n), count)
    venue = sampler.draw(rng, people.community[person], people.neighbourhood[person])
    explore = rng.random(len(person)) < 0.10
    venue[explore] = rng.integers(0, len(venues), int(explore.sum()))

    # In one of the person's free slots, on that weekday in one of the last 26 weeks.
    slot_start = np.searchsorted(slots.person, np.arange(n))
    slot_count = np.diff(np.append(slot_start, len(slots.person)))
    slot = slot_start[person] + (rng.random(len(person)) * slot_count[person]).astype(np.int64)
    today, today_weekday = _day_and_weekday(config)
    back = (today_weekday - slots.weekday[slot]) % 7
    back[back == 0] = 7
    day = today - back - 7 * rng.integers(0, 26, len(person))
    span = slots.end_minute[slot] - slots.start_minute[slot]
    minute = slots.start_minute[slot] + (rng.random(len(person)) * (span - 15)).astype(np.int64)
    occurred_at = _local_to_utc(config, day, minute) + rng.integers(0, 60, len(person))

    # Sorted by person and time, through one integer key (several times faster than lexsort).
    since = occurred_at - occurred_at.min()
    key = (person << int(since.max()).bit_length()) | since
    order = np.argsort(key, kind="stable")
    person, venue, occurred_at, key = person[order], venue[order], occurred_at[order], key[order]
    # The same person, venue and second twice would break the database's unique visit: drop the
    # later one. Same-second visits of one person are a handful in a million, so a loop is fine.
    dup = np.zeros(len(person), dtype=bool)
    for i in np.flatnonzero(key[1:] == key[:-1]) + 1:
        j = i - 1
        while j >= 0 and key[j] == key[i]:
            if venue[j] == venue[i] and not dup[j]:
                dup[i] = True
                break
            j -= 1
    return Visits(person=person[~dup], venue=venue[~dup], occurred_at=occurred_at[~dup])


def _pings(
    people: People, visits: Visits, venues: Venues, rng: np.random.Generator
) -> Pings:
    n = len(people)
    # A device ping near home when last active (within ~150 m).
    jitter = 0.15 / KM_PER_DEGREE_LAT
    cos_lat = math.cos(math.radians(float(people.lat.mean())))
    home_lon = people.lon + rng.normal(0.0, jitter, n) / cos_lat
    home_lat = people.lat + rng.normal(0.0, jitter, n)
    # Plus the latest 0 to 3 visits (visits are sorted by person and time).
    wanted = rng.integers(0, 4, n)
    ends = np.searchsorted(visits.person, np.arange(n), side="right")
    from_end = ends[visits.person] - 1 - np.arange(len(visits))
    chosen = np.flatnonzero(from_end < wanted[visits.person])
    v = visits.venue[chosen]
    near = 0.03 / KM_PER_DEGREE_LAT
    visit_lon = venues.lon[v] + rng.normal(0.0, near, len(chosen))
    visit_lat = venues.lat[v] + rng.normal(0.0, near, len(chosen))
    return Pings(
        person=np.concatenate([np.arange(n), visits.person[chosen]]),
        lon=np.concatenate([home_lon, visit_lon]),
        lat=np.concatenate([home_lat, visit_lat]),
        recorded_at=np.concatenate([people.last_active_at, visits.occurred_at[chosen]]),
        from_visit=np.concatenate([np.zeros(n, dtype=bool), np.ones(len(chosen), dtype=bool)]),
    )


def _activities(
    config: CityConfig,
    people: People,
    slots: Slots,
    venues: Venues,
    hoods: Neighbourhoods,
    sampler: _VenueSampler,
    rng: np.random.Generator,
) -> tuple[Activities, Participations]:
    n, m = len(people), config.n_activities
    organiser = rng.choice(n, m, p=people.sociability / people.sociability.sum())
    category = _pick_true(rng, people.activity_types[organiser])
    subtype = _pick_true(rng, people.interests[organiser])
    subtype[rng.random(m) < 0.3] = -1
    venue = sampler.draw(rng, people.community[organiser], people.neighbourhood[organiser])

    # In one of the organiser's own slots, 1 to 35 days ahead.
    slot_start = np.searchsorted(slots.person, organiser)
    slot_end = np.searchsorted(slots.person, organiser, side="right")
    slot = slot_start + (rng.random(m) * (slot_end - slot_start)).astype(np.int64)
    today, today_weekday = _day_and_weekday(config)
    ahead = (slots.weekday[slot] - today_weekday) % 7
    ahead[ahead == 0] = 7
    day = today + ahead + 7 * rng.integers(0, 5, m)
    starts_at = _local_to_utc(config, day, slots.start_minute[slot])
    ends_at = _local_to_utc(config, day, slots.end_minute[slot])
    created_at = config.now - (rng.uniform(1 / 24, 10.0, m) * SECONDS_PER_DAY).astype(np.int64)
    capacity = rng.integers(4, 25, m)
    skill_level = rng.integers(1, 6, m)
    radius = rng.choice(np.array([2.0, 3.0, 5.0, 8.0, 10.0, 15.0]), m)

    pick = rng.random(m)
    titles, descriptions = [], []
    for i in range(m):
        kind = ACTIVITY_TYPES[category[i]]
        options = ACTIVITY_TITLES[kind]
        what = options[int(pick[i] * len(options))]
        titles.append(f"{what} at {venues.name[venue[i]]}")
        descriptions.append(
            f"{what} in {hoods.name[venues.neighbourhood[venue[i]]]} for up to {capacity[i]} "
            f"people. Skill level {skill_level[i]} of 5; newcomers welcome."
        )
    activities = Activities(
        organiser=organiser,
        venue=venue,
        category=category,
        subtype=subtype,
        skill_level=skill_level,
        capacity=capacity,
        recruit_radius_km=radius,
        starts_at=starts_at,
        ends_at=ends_at,
        created_at=created_at,
        title=np.array(titles),
        description=np.array(descriptions),
        lon=venues.lon[venue],
        lat=venues.lat[venue],
    )

    # Participants: members of the organiser's community living near them, found like friends
    # (a few places away in the community's spatial order), never more than capacity - 1.
    x, y = to_km(config, people.lon, people.lat)
    order = np.lexsort((_morton(x, y), people.neighbourhood, people.community))
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    start, size = _segments(people.community[order])
    wanted = np.minimum(rng.integers(0, 9, m), capacity - 1)
    activity = np.repeat(np.arange(m), wanted)
    pos = position[organiser[activity]]
    offset = rng.geometric(1 / 15, len(activity)) * rng.choice(np.array([-1, 1]), len(activity))
    s, sz = start[pos], size[pos]
    person = order[s + (pos - s + offset) % sz]
    keep = person != organiser[activity]
    pair = _distinct(activity[keep] * n + person[keep])
    activity, person = pair // n, pair % n
    opened = created_at[activity]
    joined_at = opened + (rng.random(len(pair)) * (config.now - opened)).astype(np.int64)
    return activities, Participations(activity=activity, person=person, joined_at=joined_at)
