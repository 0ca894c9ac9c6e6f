"""Pages about activities: browse nearby (list and map), one activity, join and leave, create and
edit, the organiser's invite page, and the invitee's inbox and notifications.

Every rule lives in ``activities.services``; a domain error's message is shown as it is written.
"""

from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from activities.errors import ActivityError
from activities.models import Activity, Invitation
from activities.selectors import (
    activities_nearby,
    activity_invitations,
    activity_recommendations,
    activity_viewer_state,
    activity_visible_to,
    invitations_for_invitee,
)
from activities.services.activities import (
    activity_cancel,
    activity_create,
    activity_publish,
    activity_update,
)
from activities.services.invitations import invitation_accept, invitation_decline, invitations_send
from activities.services.participation import (
    participation_join,
    participation_leave,
    waitlist_join,
    waitlist_leave,
)
from socialmatch.web.forms import ActivityFilterForm, ActivityForm
from users.models import Profile
from users.selectors import notifications_for
from users.services import notifications_mark_read

JOINED = "You joined {title}."
LEFT = "You left {title}."
WAITING = "You are on the waitlist of {title}: we will tell you when a place frees up."
STOPPED_WAITING = "You left the waitlist of {title}."
CREATED = "{title} is published. Recommended participants appear on its invite page in a moment."
SAVED_DRAFT = "{title} is saved as a draft."
UPDATED = "{title} is updated."
CANCELLED = "{title} is cancelled; participants and invitees are told."
PUBLISHED = "{title} is published."
INVITED = "Invited {count} {people}."
ACCEPTED = "You joined {title}. Have fun!"
DECLINED = "You declined the invitation to {title}."
PICK_SOMEONE = "Choose at least one person, or a number of top recommendations."


def _error(request: HttpRequest, exc: Exception) -> None:
    if isinstance(exc, ValidationError):
        text = " ".join(exc.messages)
    elif isinstance(exc, ActivityError):
        text = exc.message
    else:
        text = str(exc)
    messages.error(request, text)


def _my_point(request: HttpRequest) -> tuple[float, float] | None:
    location = Profile.objects.filter(user=request.user).values_list("location", flat=True).first()
    return (location.x, location.y) if location is not None else None


def _activity_for(request: HttpRequest, activity_id: int) -> Activity:
    activity = activity_visible_to(viewer=request.user).filter(pk=activity_id).first()
    if activity is None:
        raise Http404("No such activity.")
    return activity


@login_required
def activity_list(request: HttpRequest) -> HttpResponse:
    point = _my_point(request)
    if point is None:
        messages.info(request, "Set where you are on your profile to see activities nearby.")
        return redirect("web:profile")
    form = ActivityFilterForm(request.GET or None)
    filters = form.cleaned_data if request.GET and form.is_valid() else ActivityFilterForm.DEFAULTS
    if request.GET and form.errors:
        messages.error(request, "Those filters are not valid; showing everything within 10 km.")
    now = timezone.now()
    within_days = filters.get("within_days")
    activities = list(activities_nearby(
        lon=point[0], lat=point[1], radius_km=filters.get("radius_km") or 10, category=filters.get("category") or None,
        starts_before=now + dt.timedelta(days=within_days) if within_days else None,
        skill_level=filters.get("skill_level"), order=filters.get("order") or "distance",
    )[:100])
    # Places are public: the map shows where activities are (never where people are).
    markers = [{"id": a.pk, "title": a.title, "lat": a.location.y, "lon": a.location.x,
                "url": reverse("web:activity", args=[a.pk])} for a in activities]
    mine = Activity.objects.filter(organiser=request.user).exclude(status=Activity.Status.CANCELLED).order_by("-starts_at")[:10]
    return render(request, "web/activities.html", {
        "form": form, "activities": activities, "markers": markers, "mine": mine,
    })


@login_required
def activity_detail(request: HttpRequest, activity_id: int) -> HttpResponse:
    activity = _activity_for(request, activity_id)
    state = activity_viewer_state(activity=activity, viewer=request.user)
    return render(request, "web/activity.html", {
        "activity": activity, "state": state, "full": activity.participant_count >= activity.capacity,
        "started": activity.starts_at <= timezone.now(),
        "marker": {"lat": activity.location.y, "lon": activity.location.x, "title": activity.title},
    })


def _act(request: HttpRequest, activity_id: int, action, success: str) -> HttpResponse:  # type: ignore[no-untyped-def]
    activity = _activity_for(request, activity_id)
    try:
        action(actor=request.user, activity=activity)
    except (ActivityError, ValidationError, PermissionDenied) as exc:
        _error(request, exc)
    else:
        messages.success(request, success.format(title=activity.title))
    return redirect("web:activity", activity_id)


@login_required
@require_POST
def activity_join(request: HttpRequest, activity_id: int) -> HttpResponse:
    return _act(request, activity_id, participation_join, JOINED)


@login_required
@require_POST
def activity_leave(request: HttpRequest, activity_id: int) -> HttpResponse:
    return _act(request, activity_id, participation_leave, LEFT)


@login_required
@require_POST
def activity_wait(request: HttpRequest, activity_id: int) -> HttpResponse:
    return _act(request, activity_id, waitlist_join, WAITING)


@login_required
@require_POST
def activity_unwait(request: HttpRequest, activity_id: int) -> HttpResponse:
    return _act(request, activity_id, waitlist_leave, STOPPED_WAITING)


@login_required
@require_POST
def activity_cancel_view(request: HttpRequest, activity_id: int) -> HttpResponse:
    return _act(request, activity_id, activity_cancel, CANCELLED)


@login_required
@require_POST
def activity_publish_view(request: HttpRequest, activity_id: int) -> HttpResponse:
    return _act(request, activity_id, activity_publish, PUBLISHED)


def _form_errors(form: ActivityForm, exc: ValidationError) -> None:
    names = {"location": "latitude"}
    for field, errors in exc.message_dict.items():
        field = names.get(field, field)
        form.add_error(field if field in form.fields else None, errors)


@login_required
def activity_create_view(request: HttpRequest) -> HttpResponse:
    point = _my_point(request)
    initial = {"latitude": round(point[1], 5), "longitude": round(point[0], 5)} if point else {}
    form = ActivityForm(request.POST or None, initial={**initial, "publish": True, "capacity": 10, "skill_level": 3,
                                                        "recruit_radius_km": 10})
    if request.method == "POST" and form.is_valid():
        data = form.service_fields()
        publish = form.cleaned_data["publish"]
        try:
            activity = activity_create(actor=request.user, publish=publish, **data)
        except ValidationError as exc:
            _form_errors(form, exc)
        except (ActivityError, PermissionDenied) as exc:
            _error(request, exc)
        else:
            messages.success(request, (CREATED if publish else SAVED_DRAFT).format(title=activity.title))
            return redirect("web:activity-invite" if publish else "web:activity", activity.pk)
    return render(request, "web/activity_form.html", {"form": form, "creating": True})


@login_required
def activity_edit_view(request: HttpRequest, activity_id: int) -> HttpResponse:
    activity = _activity_for(request, activity_id)
    if activity.organiser_id != request.user.pk and not request.user.is_staff:
        raise PermissionDenied("Only the organiser may edit this activity.")
    initial = {name: getattr(activity, name) for name in ActivityForm.SERVICE_FIELDS if name != "location"}
    initial.update(latitude=activity.location.y, longitude=activity.location.x,
                   starts_at=timezone.localtime(activity.starts_at), ends_at=timezone.localtime(activity.ends_at))
    form = ActivityForm(request.POST or None, initial=initial, editing=True)
    if request.method == "POST" and form.is_valid():
        try:
            activity_update(actor=request.user, activity=activity, **form.service_fields())
        except ValidationError as exc:
            _form_errors(form, exc)
        except (ActivityError, PermissionDenied) as exc:
            _error(request, exc)
        else:
            messages.success(request, UPDATED.format(title=activity.title))
            return redirect("web:activity", activity.pk)
    return render(request, "web/activity_form.html", {"form": form, "activity": activity, "creating": False})


@login_required
def activity_invite(request: HttpRequest, activity_id: int) -> HttpResponse:
    activity = _activity_for(request, activity_id)
    try:
        recommendations = activity_recommendations(actor=request.user, activity=activity)
        invitations = list(activity_invitations(actor=request.user, activity=activity))
    except PermissionDenied as exc:
        raise PermissionDenied(str(exc)) from exc
    if request.method == "POST":
        if request.user.pk != activity.organiser_id:
            raise PermissionDenied("Only the organiser may invite people to this activity.")
        chosen = [int(v) for v in request.POST.getlist("user_ids") if v.isdigit()]
        top = request.POST.get("top", "")
        try:
            if request.POST.get("mode") == "top" and top.isdigit() and int(top) > 0:
                sent = invitations_send(actor=request.user, activity=activity, top=int(top))
            elif chosen and request.POST.get("mode") != "top":
                sent = invitations_send(actor=request.user, activity=activity, user_ids=chosen)
            else:
                raise ValidationError(PICK_SOMEONE)
        except (ActivityError, ValidationError, PermissionDenied) as exc:
            _error(request, exc)
        else:
            messages.success(request, INVITED.format(count=len(sent), people="person" if len(sent) == 1 else "people"))
        return redirect("web:activity-invite", activity.pk)
    invited = {i.invitee_id for i in invitations}
    return render(request, "web/activity_invite.html", {
        "activity": activity, "recommendations": recommendations, "invitations": invitations, "invited": invited,
        "is_organiser": request.user.pk == activity.organiser_id,
    })


@login_required
def invitations_inbox(request: HttpRequest) -> HttpResponse:
    invitations = list(invitations_for_invitee(user=request.user)[:100])
    notifications = list(notifications_for(user=request.user)[:30])
    unread = [n.pk for n in notifications if n.read_at is None]
    response = render(request, "web/invitations.html", {"invitations": invitations, "notifications": notifications,
                                                         "unread": set(unread)})
    if unread:
        notifications_mark_read(actor=request.user, ids=unread)  # seen now; shown as new this once
    return response


@login_required
@require_POST
def invitation_answer(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = get_object_or_404(Invitation.objects.select_related("activity"), pk=invitation_id)
    try:
        if request.POST.get("answer") == "accept":
            invitation_accept(actor=request.user, invitation=invitation)
            messages.success(request, ACCEPTED.format(title=invitation.activity.title))
        else:
            invitation_decline(actor=request.user, invitation=invitation)
            messages.info(request, DECLINED.format(title=invitation.activity.title))
    except (ActivityError, ValidationError, PermissionDenied) as exc:
        _error(request, exc)
    return redirect("web:invitations")
