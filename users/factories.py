"""factory_boy factories for people, used by tests and nowhere else at run time."""

from __future__ import annotations

import factory
from django.contrib.gis.geos import Point

from users.models import Availability, Block, Connection, Profile, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"person{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery")

    @factory.post_generation
    def save_password(self, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            self.save(update_fields=["password"])


class ProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Profile

    user = factory.SubFactory(UserFactory)
    display_name = factory.LazyAttribute(lambda p: p.user.username.capitalize())
    birth_year = 1992
    interests = factory.LazyFunction(lambda: ["sports", "music"])
    # Central Pittsburgh, near the yelp-small sample.
    location = factory.LazyFunction(lambda: Point(-79.9959, 40.4406, srid=4326))


class AvailabilityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Availability

    user = factory.SubFactory(UserFactory)
    weekday = 5
    start_time = "10:00"
    end_time = "14:00"


class ConnectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Connection

    from_user = factory.SubFactory(UserFactory)
    to_user = factory.SubFactory(UserFactory)
    status = Connection.Status.ACCEPTED


class BlockFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Block

    blocker = factory.SubFactory(UserFactory)
    blocked = factory.SubFactory(UserFactory)
