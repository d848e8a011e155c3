"""Load the rows the member page shows besides the member and its metrics.

One query loads them all: each section is a queryset of one model, the
sections are combined with UNION ALL, and every row carries its section's
name and its fields as a JSON object. The rows are turned back into model
instances with each field's own conversion, so the rest of the page works
on ordinary model objects.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from django.contrib.auth import get_user_model
from django.db import connection, models
from django.db.models import CharField, F, Q, QuerySet, Subquery, Value
from django.db.models.functions import Cast, JSONObject
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from benefits.models import Benefit, BenefitPool, Grant, TierBenefit, TierPeriod
from members.models import Activity, ActivityKind, Channel, Member, OutboxMessage
from members.notifications import RECENT_MESSAGE_COUNT
from tiers.models import ReviewWarning, TierOverride

RECENT_ACTIVITY_COUNT = 10

ModelT = TypeVar("ModelT", bound=models.Model)


@dataclass
class PageRows:
    """The member's rows for one page view, each list in the page's order."""

    # Active overrides of any date, oldest request first. Evaluation picks
    # the ones in force at its own moment.
    overrides: list[TierOverride] = field(default_factory=list)
    review_warning: ReviewWarning | None = None
    # Newest first, each with its benefit loaded.
    grants: list[Grant] = field(default_factory=list)
    tier_benefits: list[Benefit] = field(default_factory=list)
    # Each pool with its options, by name.
    pools: list[tuple[BenefitPool, list[Benefit]]] = field(default_factory=list)
    # The member's latest period in its tier, where pool choices count.
    period: TierPeriod | None = None
    # Newest first, each with its channel and kind loaded.
    activities: list[Activity] = field(default_factory=list)
    # Sent in-app messages, newest first.
    messages: list[OutboxMessage] = field(default_factory=list)


def _payload(model: type[models.Model], **extra: Any) -> JSONObject:
    """Build a JSON object of every concrete field of ``model``.

    Decimals and JSON columns travel as text: SQLite would turn a decimal
    into a float, and a JSON column into a quoted string.
    """
    values: dict[str, Any] = {}
    for model_field in model._meta.concrete_fields:
        name = model_field.attname
        if isinstance(model_field, models.DecimalField | models.JSONField):
            values[name] = Cast(name, output_field=models.TextField())
        else:
            values[name] = F(name)
    values.update(extra)
    return JSONObject(**values)


def _section(
    name: str, queryset: QuerySet[Any], **extra: Any
) -> QuerySet[Any, tuple[str, Any]]:
    return (
        queryset.order_by()
        .annotate(
            section=Value(name, output_field=CharField()),
            payload=_payload(queryset.model, **extra),
        )
        .values_list("section", "payload")
    )


def _python_value(model_field: models.Field[Any, Any], raw: Any) -> Any:
    """Convert one JSON value to what the ORM would have loaded for the field."""
    if raw is None:
        return None
    if isinstance(model_field, models.DecimalField):
        places = Decimal(1).scaleb(-(model_field.decimal_places or 0))
        return Decimal(str(raw)).quantize(places)
    if isinstance(model_field, models.JSONField):
        return json.loads(raw) if isinstance(raw, str) else raw
    if isinstance(model_field, models.DateTimeField):
        moment = parse_datetime(raw) if isinstance(raw, str) else raw
        if moment is not None and timezone.is_naive(moment):
            # SQLite stores UTC without an offset.
            moment = timezone.make_aware(moment, dt.UTC)
        return moment
    if isinstance(model_field, models.DateField):
        return parse_date(raw) if isinstance(raw, str) else raw
    return model_field.to_python(raw)


def _instance(model: type[ModelT], payload: dict[str, Any]) -> ModelT:
    fields = model._meta.concrete_fields
    values = [_python_value(f, payload.get(f.attname)) for f in fields]
    return model.from_db(connection.alias, [f.attname for f in fields], values)


def _recent_ids(queryset: QuerySet[Any], ordering: Iterable[str], count: int) -> Any:
    return Subquery(queryset.order_by(*ordering).values("pk")[:count])


def _sections(member: Member) -> list[QuerySet[Any, tuple[str, Any]]]:
    tier_id = member.tier_id
    recent_activity = Activity.objects.filter(
        pk__in=_recent_ids(
            Activity.objects.filter(member_id=member.pk),
            ("-occurred_at", "-pk"),
            RECENT_ACTIVITY_COUNT,
        )
    )
    messages = OutboxMessage.objects.filter(
        pk__in=_recent_ids(
            OutboxMessage.objects.filter(
                member_id=member.pk,
                channel="in_app",
                status=OutboxMessage.Status.SENT,
            ),
            ("-created_at", "-pk"),
            RECENT_MESSAGE_COUNT,
        )
    )
    grants = Grant.objects.filter(member_id=member.pk)
    sections = [
        _section(
            "override",
            TierOverride.objects.filter(
                member_id=member.pk, status=TierOverride.Status.ACTIVE
            ),
            requested_by_name=F("requested_by__username"),
            approved_by_name=F("approved_by__username"),
        ),
        _section("grant", grants),
        _section("activity", recent_activity),
        _section(
            "channel", Channel.objects.filter(pk__in=recent_activity.values("channel"))
        ),
        _section(
            "kind", ActivityKind.objects.filter(pk__in=recent_activity.values("kind"))
        ),
        _section("message", messages),
    ]
    benefit_ids = Q(pk__in=grants.values("benefit"))
    if tier_id is not None:
        options = BenefitPool.options.through.objects.filter(benefitpool__tier=tier_id)
        links = TierBenefit.objects.filter(tier=tier_id)
        benefit_ids |= Q(pk__in=links.values("benefit")) | Q(
            pk__in=options.values("benefit")
        )
        latest_period = TierPeriod.objects.filter(
            member_id=member.pk, tier_id=tier_id
        ).order_by("-ends_at")
        sections += [
            _section("tier_benefit", links),
            _section("pool", BenefitPool.objects.filter(tier=tier_id)),
            _section("pool_option", options),
            _section(
                "period",
                TierPeriod.objects.filter(pk=Subquery(latest_period.values("pk")[:1])),
            ),
        ]
    if tier_id is not None and member.review_at is not None:
        sections.append(
            _section(
                "review_warning",
                ReviewWarning.objects.filter(
                    member_id=member.pk, review_at=member.review_at, tier=tier_id
                ),
            )
        )
    sections.append(_section("benefit", Benefit.objects.filter(benefit_ids)))
    return sections


def _users(override: TierOverride, payload: dict[str, Any]) -> None:
    """Attach the requesting and approving users' names, which summary() reads."""
    user_model = get_user_model()
    for relation in ("requested_by", "approved_by"):
        user_id = getattr(override, f"{relation}_id")
        if user_id is not None:
            user = user_model(pk=user_id)
            setattr(user, user_model.USERNAME_FIELD, payload[f"{relation}_name"])
            setattr(override, relation, user)


def load_page_rows(member: Member) -> PageRows:
    """Load the member's page rows in one query.

    ``member.tier`` must be loaded already (select_related): the review
    warning is the one of the member's tier.
    """
    first, *rest = _sections(member)
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for section, payload in first.union(*rest, all=True):
        found[section].append(payload)

    def build(section: str, model: type[ModelT]) -> list[ModelT]:
        return [_instance(model, payload) for payload in found[section]]

    rows = PageRows()
    for payload in found["override"]:
        override = _instance(TierOverride, payload)
        _users(override, payload)
        rows.overrides.append(override)
    rows.overrides.sort(key=lambda override: (override.requested_at, override.pk))

    benefits = {benefit.pk: benefit for benefit in build("benefit", Benefit)}
    rows.grants = build("grant", Grant)
    for grant in rows.grants:
        grant.benefit = benefits[grant.benefit_id]
    rows.grants.sort(key=lambda grant: (grant.created_at, grant.pk), reverse=True)

    tier_benefits = [
        benefits[link.benefit_id] for link in build("tier_benefit", TierBenefit)
    ]
    rows.tier_benefits = sorted(tier_benefits, key=lambda b: (b.name, b.pk))
    options: dict[int, list[Benefit]] = defaultdict(list)
    for payload in found["pool_option"]:
        options[payload["benefitpool_id"]].append(benefits[payload["benefit_id"]])
    pools = sorted(build("pool", BenefitPool), key=lambda pool: (pool.name, pool.pk))
    rows.pools = [
        (pool, sorted(options[pool.pk], key=lambda b: b.name)) for pool in pools
    ]
    periods = build("period", TierPeriod)
    rows.period = periods[0] if periods else None

    warnings = build("review_warning", ReviewWarning)
    if warnings and member.tier is not None:
        warning = min(warnings, key=lambda w: (w.review_at, w.pk))
        warning.tier = member.tier
        rows.review_warning = warning

    channels = {channel.pk: channel for channel in build("channel", Channel)}
    kinds = {kind.pk: kind for kind in build("kind", ActivityKind)}
    rows.activities = build("activity", Activity)
    for activity in rows.activities:
        activity.channel = channels[activity.channel_id]
        activity.kind = kinds[activity.kind_id]
    rows.activities.sort(key=lambda a: (a.occurred_at, a.pk), reverse=True)

    rows.messages = build("message", OutboxMessage)
    rows.messages.sort(key=lambda m: (m.created_at, m.pk), reverse=True)
    return rows
