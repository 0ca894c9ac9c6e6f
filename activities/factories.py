"""factory_boy factories for venues and activities (tests only)."""

from __future__ import annotations

import datetime as dt

import factory
from django.contrib.gis.geos import Point
from django.utils import timezone

from activities.models import Activity, Category, Invitation, Participation, Venue
from users.factories import UserFactory


class CategoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Category
        django_get_or_create = ("source", "external_id")

    source = "taxonomy"
    external_id = factory.Sequence(lambda n: f"c{n}")
    name = factory.LazyAttribute(lambda c: f"Category {c.external_id}")
    interest = "sports"


class VenueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Venue

    name = factory.Sequence(lambda n: f"Venue {n}")
    location = factory.LazyFunction(lambda: Point(-79.99, 40.44, srid=4326))
    place_type = "park"


class ActivityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Activity

    organiser = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Badminton doubles #{n}")
    category = "sports"
    subtype = "fitness"
    skill_level = 3
    location = factory.LazyFunction(lambda: Point(-79.99, 40.44, srid=4326))
    starts_at = factory.LazyFunction(lambda: timezone.now() + dt.timedelta(days=3))
    ends_at = factory.LazyAttribute(lambda a: a.starts_at + dt.timedelta(hours=2))
    capacity = 8
    status = Activity.Status.PUBLISHED


class ParticipationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Participation

    activity = factory.SubFactory(ActivityFactory)
    user = factory.SubFactory(UserFactory)


class InvitationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Invitation

    activity = factory.SubFactory(ActivityFactory)
    invitee = factory.SubFactory(UserFactory)
    invited_by = factory.LazyAttribute(lambda i: i.activity.organiser)
