"""Forms of the pages people use. They validate input; services do the writing."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.contrib.gis.geos import Point
from django.utils import timezone

from users.models import BIRTH_YEAR_MAX, BIRTH_YEAR_MIN, Gender, Occupation, User
from users.services import WEEKDAYS
from users.taxonomy import (
    ACTIVITY_TYPE_CHOICES,
    INTEREST_CHOICES,
    PLACE_TYPE_CHOICES,
    TIME_PREFERENCE_CHOICES,
)

LOCATION_HALF = "Give both latitude and longitude, or neither."
RADIUS_CHOICES = [(1, "1 km"), (2, "2 km"), (5, "5 km"), (10, "10 km"), (20, "20 km"), (50, "50 km")]


class SignUpForm(UserCreationForm):
    email = forms.EmailField(required=True, help_text="For password resets; never shown to others.")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


def _checkboxes(choices: list[tuple[str, str]], label: str) -> forms.MultipleChoiceField:
    return forms.MultipleChoiceField(choices=choices, required=False, label=label, widget=forms.CheckboxSelectMultiple)


class ProfileForm(forms.Form):
    display_name = forms.CharField(max_length=80, label="Name shown to others")
    bio = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 3}), label="About you")
    birth_year = forms.IntegerField(min_value=BIRTH_YEAR_MIN, max_value=BIRTH_YEAR_MAX, required=False)
    gender = forms.ChoiceField(choices=Gender.choices, initial=Gender.UNSPECIFIED)
    occupation = forms.ChoiceField(choices=Occupation.choices, initial=Occupation.OTHER)
    languages = forms.CharField(
        required=False, max_length=200, label="Languages you speak",
        help_text="Two-letter codes separated by commas, for example: en, fr.",
    )
    interests = _checkboxes(INTEREST_CHOICES, "Interests")
    activity_types = _checkboxes(ACTIVITY_TYPE_CHOICES, "Activities you like to join")
    place_types = _checkboxes(PLACE_TYPE_CHOICES, "Places you like")
    time_preferences = _checkboxes(TIME_PREFERENCE_CHOICES, "When you like to go out")
    discoverable = forms.BooleanField(
        required=False, label="Show me to people nearby",
        help_text="When off, you can still browse, but nobody sees you in their list.",
    )
    latitude = forms.FloatField(min_value=-90, max_value=90, required=False,
                                widget=forms.NumberInput(attrs={"step": "any"}))
    longitude = forms.FloatField(min_value=-180, max_value=180, required=False,
                                 widget=forms.NumberInput(attrs={"step": "any"}))

    def clean_languages(self) -> list[str]:
        codes = [c.strip().lower() for c in self.cleaned_data["languages"].split(",") if c.strip()]
        bad = [c for c in codes if len(c) != 2 or not c.isalpha()]
        if bad:
            raise forms.ValidationError(f"Not a two-letter language code: {', '.join(bad)}.")
        return list(dict.fromkeys(codes))

    def clean(self) -> dict[str, object]:
        data = super().clean()
        if (data.get("latitude") is None) != (data.get("longitude") is None) and not self.errors.get("latitude") \
                and not self.errors.get("longitude"):
            raise forms.ValidationError(LOCATION_HALF)
        return data


class AvailabilityForm(forms.Form):
    weekday = forms.TypedChoiceField(choices=list(enumerate(WEEKDAYS)), coerce=int)
    start_time = forms.TimeField(widget=forms.TimeInput(attrs={"type": "time"}), label="From")
    end_time = forms.TimeField(widget=forms.TimeInput(attrs={"type": "time"}), label="To")

    def clean(self) -> dict[str, object]:
        data = super().clean()
        start, end = data.get("start_time"), data.get("end_time")
        if start and end and end <= start:
            raise forms.ValidationError("A slot must end after it starts.")
        return data


AvailabilityFormSet = forms.formset_factory(AvailabilityForm, extra=1, can_delete=True, max_num=21, validate_max=True)


class NearbyFilterForm(forms.Form):
    radius_km = forms.TypedChoiceField(choices=RADIUS_CHOICES, coerce=int, initial=5, label="Within")
    interest = forms.ChoiceField(choices=[("", "Any")], required=False, label="Who also likes")

    def __init__(self, *args: object, interests: list[str] = (), **kwargs: object) -> None:  # type: ignore[assignment]
        super().__init__(*args, **kwargs)
        self.fields["interest"].choices = [("", "Any")] + [(i, i.capitalize()) for i in interests]


SKILL_CHOICES = [(1, "1 - beginner"), (2, "2"), (3, "3 - intermediate"), (4, "4"), (5, "5 - expert")]


class ActivityFilterForm(forms.Form):
    DEFAULTS: dict[str, object] = {"radius_km": 10, "category": "", "within_days": None, "skill_level": None,
                                   "order": "distance"}

    radius_km = forms.TypedChoiceField(choices=RADIUS_CHOICES, coerce=int, initial=10, label="Within")
    category = forms.ChoiceField(choices=[("", "Any")] + ACTIVITY_TYPE_CHOICES, required=False)
    within_days = forms.TypedChoiceField(
        choices=[("", "Any time"), (1, "Next 24 hours"), (7, "Next 7 days"), (30, "Next 30 days")],
        coerce=int, empty_value=None, required=False, label="When",
    )
    skill_level = forms.TypedChoiceField(choices=[("", "Any level")] + SKILL_CHOICES, coerce=int, empty_value=None,
                                         required=False, label="Level")
    order = forms.ChoiceField(choices=[("distance", "Nearest first"), ("start", "Soonest first")], required=False,
                              label="Order")


class ActivityForm(forms.Form):
    SERVICE_FIELDS = ("title", "description", "category", "subtype", "skill_level", "location", "starts_at", "ends_at",
                      "capacity", "recruit_radius_km")

    title = forms.CharField(max_length=140)
    description = forms.CharField(max_length=5000, required=False, widget=forms.Textarea(attrs={"rows": 4}))
    category = forms.ChoiceField(choices=ACTIVITY_TYPE_CHOICES)
    subtype = forms.ChoiceField(choices=[("", "-")] + INTEREST_CHOICES, required=False, label="Interest it is about")
    skill_level = forms.TypedChoiceField(choices=SKILL_CHOICES, coerce=int, label="Skill level")
    starts_at = forms.DateTimeField(widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
                                    label="Starts")
    ends_at = forms.DateTimeField(widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
                                  label="Ends")
    capacity = forms.IntegerField(min_value=1, max_value=10_000, label="Places")
    recruit_radius_km = forms.FloatField(min_value=0.5, max_value=100, label="Recommend people within (km)")
    latitude = forms.FloatField(min_value=-90, max_value=90, widget=forms.NumberInput(attrs={"step": "any"}))
    longitude = forms.FloatField(min_value=-180, max_value=180, widget=forms.NumberInput(attrs={"step": "any"}))
    publish = forms.BooleanField(required=False, label="Publish now (otherwise keep it as a draft)")

    def __init__(self, *args: object, editing: bool = False, **kwargs: object) -> None:  # type: ignore[misc]
        super().__init__(*args, **kwargs)
        if editing:
            del self.fields["publish"]

    def service_fields(self) -> dict[str, object]:
        data = self.cleaned_data
        fields = {name: data[name] for name in self.SERVICE_FIELDS if name != "location"}
        fields["location"] = Point(data["longitude"], data["latitude"], srid=4326)
        for name in ("starts_at", "ends_at"):
            if timezone.is_naive(fields[name]):
                fields[name] = timezone.make_aware(fields[name])
        return fields
