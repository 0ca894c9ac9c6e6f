"""The pages people use: thin views over the services of users, activities and matching.

Every write is a POST that redirects (so a refresh never repeats it) and reports its outcome in a
message; errors from services are shown as they are written, since they are written for people.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from matching.apis import NearbyThrottle
from matching.services.feedback import connection_answer, match_connect, match_pass, person_view
from matching.services.nearby import NearbyError, QueryPointMoving, nearby_matches
from socialmatch.web.forms import AvailabilityFormSet, NearbyFilterForm, ProfileForm, SignUpForm
from users.models import Availability, Block, Connection, Profile, User
from users.selectors import connection_between, display_name, mutual_friend_count
from users.services import (
    UserActionError,
    availability_replace,
    profile_update,
    user_block,
    user_unblock,
)

PROFILE_SAVED = "Your profile is saved."
NEEDS_LOCATION = "Set where you are on your profile to see people nearby."
CONNECT_SENT = "Request sent to {name}."
CONNECTED = "You and {name} are now connected."
PASSED = "{name} will not be shown to you for a while."
BLOCKED = "{name} is blocked: neither of you will see the other."
UNBLOCKED = "{name} is unblocked."
DECLINED = "Request declined."
PERSON_UNKNOWN = "This person cannot be shown."
TOO_MANY = "You have looked for people nearby very often: try again in {seconds} s."


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        profile = Profile.objects.filter(user=request.user).first()
        return redirect("web:people" if profile and profile.location else "web:profile")
    return render(request, "web/home.html")


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("web:home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="users.backends.PreparedModelBackend")
        messages.success(request, "Welcome! Tell people a little about yourself.")
        return redirect("web:profile")
    return render(request, "registration/signup.html", {"form": form})


def _profile_initial(user: User, profile: Profile | None) -> dict[str, object]:
    if profile is None:
        return {"display_name": user.get_username(), "discoverable": True}
    initial = {name: getattr(profile, name) for name in (
        "display_name", "bio", "birth_year", "gender", "occupation", "interests", "activity_types",
        "place_types", "time_preferences", "discoverable")}
    initial["languages"] = ", ".join(profile.languages)
    if profile.location is not None:
        initial["longitude"], initial["latitude"] = round(profile.location.x, 6), round(profile.location.y, 6)
    return initial


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    user = request.user
    current = Profile.objects.filter(user=user).first()
    slots = [{"weekday": a.weekday, "start_time": a.start_time, "end_time": a.end_time}
             for a in Availability.objects.filter(user=user)]
    form = ProfileForm(request.POST or None, initial=_profile_initial(user, current))
    formset = AvailabilityFormSet(request.POST or None, initial=slots, prefix="slots")
    if request.method == "POST" and form.is_valid() and formset.is_valid():
        data = dict(form.cleaned_data)
        lat, lon = data.pop("latitude"), data.pop("longitude")
        keep = [f.cleaned_data for f in formset.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        try:
            with transaction.atomic():
                profile_update(user=user, location=(lon, lat) if lat is not None else None, **data)
                availability_replace(user=user, slots=[(s["weekday"], s["start_time"], s["end_time"]) for s in keep])
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        except UserActionError as exc:
            formset._non_form_errors = formset.error_class([str(exc)])
        else:
            messages.success(request, PROFILE_SAVED)
            return redirect("web:people" if lat is not None or (current and current.location) else "web:profile")
    return render(request, "web/profile.html", {"form": form, "formset": formset, "has_location": bool(current and current.location)})


def _reasons(match: object) -> list[str]:
    reasons = []
    if match.shared_interests:
        reasons.append("You both like " + _join([i for i in match.shared_interests]))
    if match.mutual_friends:
        reasons.append(f"{match.mutual_friends} mutual friend{'s' if match.mutual_friends != 1 else ''}")
    if match.similarity >= 0.75:
        reasons.append("Very similar to you")
    elif match.similarity >= 0.6:
        reasons.append("Similar to you")
    reasons.append(f"{match.distance_bucket} away")
    return reasons


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


@login_required
def people(request: HttpRequest) -> HttpResponse:
    me = Profile.objects.filter(user=request.user).first()
    if me is None or me.location is None:
        messages.info(request, NEEDS_LOCATION)
        return redirect("web:profile")
    form = NearbyFilterForm(request.GET or None, interests=me.interests)
    radius, interest = 5, ""
    if request.GET and form.is_valid():
        radius, interest = form.cleaned_data["radius_km"], form.cleaned_data["interest"]
    elif request.GET:
        messages.error(request, "Those filters are not valid; showing people within 5 km.")
    # The API's per-person budget (NEARBY_THROTTLE), shared: pages and API count together, so
    # neither is a way around the other's limit.
    throttle = NearbyThrottle()
    if not throttle.allow_request(request, None):
        wait = int(throttle.wait() or 1)
        messages.error(request, TOO_MANY.format(seconds=wait))
        response = render(request, "web/people.html", {"form": form, "cards": [], "result": None, "radius": radius},
                          status=429)
        response["Retry-After"] = str(wait)
        return response
    try:
        # A filter keeps the people who also like it among the best 100, so the page still has 20.
        result = nearby_matches(user=request.user, radius_km=radius, limit=100 if interest else 20)
    except QueryPointMoving as exc:  # the asker's own location jumped around: wait, then retry
        messages.error(request, str(exc))
        return render(request, "web/people.html", {"form": form, "cards": [], "result": None, "radius": radius},
                      status=429)
    except NearbyError as exc:
        messages.error(request, str(exc))
        return redirect("web:profile")
    matches = [m for m in result.matches if not interest or interest in m.shared_interests][:20]
    cards = [{"match": m, "reasons": _reasons(m)} for m in matches]
    return render(request, "web/people.html", {"form": form, "cards": cards, "result": result, "radius": radius})


def _back(request: HttpRequest, default: str) -> HttpResponse:
    target = request.POST.get("next", "")
    return redirect(target if target.startswith("/") and not target.startswith("//") else reverse(default))


@login_required
def person(request: HttpRequest, user_id: int) -> HttpResponse:
    """Someone's public profile: what they say about themselves, never where they are."""
    try:
        profile = person_view(actor=request.user, user_id=user_id, surface=request.GET.get("from", "nearby")[:24])
    except UserActionError:
        raise Http404(PERSON_UNKNOWN) from None
    mine = Profile.objects.filter(user=request.user).values_list("interests", flat=True).first() or []
    connection = connection_between(request.user.pk, user_id)
    decade = None
    if profile.birth_year:
        decade = (timezone.now().year - profile.birth_year) // 10 * 10
    return render(request, "web/person.html", {
        "person": profile, "shared": [i for i in profile.interests if i in mine], "decade": decade,
        "mutual": mutual_friend_count(request.user.pk, user_id), "connection": connection,
        "is_me": user_id == request.user.pk,
    })


@login_required
@require_POST
def connect(request: HttpRequest, user_id: int) -> HttpResponse:
    try:
        connection = match_connect(actor=request.user, target_user_id=user_id, surface=request.POST.get("surface", "nearby")[:24])
    except UserActionError as exc:
        messages.error(request, str(exc))
    else:
        text = CONNECTED if connection.status == Connection.Status.ACCEPTED else CONNECT_SENT
        messages.success(request, text.format(name=display_name(user_id)))
    return _back(request, "web:people")


@login_required
@require_POST
def pass_person(request: HttpRequest, user_id: int) -> HttpResponse:
    try:
        match_pass(actor=request.user, target_user_id=user_id)
    except UserActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, PASSED.format(name=display_name(user_id)))
    return _back(request, "web:people")


@login_required
def connections(request: HttpRequest) -> HttpResponse:
    me = request.user
    base = Connection.objects.select_related("from_user__profile", "to_user__profile")
    context = {
        "incoming": base.filter(to_user=me, status=Connection.Status.PENDING).order_by("-created_at"),
        "sent": base.filter(from_user=me, status=Connection.Status.PENDING).order_by("-created_at"),
        "friends": [
            c.to_user if c.from_user_id == me.pk else c.from_user
            for c in base.filter(Q(from_user=me) | Q(to_user=me), status=Connection.Status.ACCEPTED).order_by("-responded_at")
        ],
        "blocked": Block.objects.filter(blocker=me).select_related("blocked__profile").order_by("-created_at"),
    }
    return render(request, "web/connections.html", context)


@login_required
@require_POST
def connection_reply(request: HttpRequest, connection_id: int) -> HttpResponse:
    accept = request.POST.get("answer") == "accept"
    try:
        connection = connection_answer(actor=request.user, connection_id=connection_id, accept=accept)
    except UserActionError as exc:
        messages.error(request, str(exc))
    else:
        if accept:
            messages.success(request, CONNECTED.format(name=display_name(connection.from_user_id)))
        else:
            messages.info(request, DECLINED)
    return redirect("web:connections")


@login_required
@require_POST
def block(request: HttpRequest, user_id: int) -> HttpResponse:
    try:
        user_block(actor=request.user, blocked_id=user_id)
    except UserActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, BLOCKED.format(name=display_name(user_id)))
    return _back(request, "web:connections")


@login_required
@require_POST
def unblock(request: HttpRequest, user_id: int) -> HttpResponse:
    if user_unblock(actor=request.user, blocked_id=user_id):
        messages.success(request, UNBLOCKED.format(name=display_name(user_id)))
    return redirect("web:connections")
