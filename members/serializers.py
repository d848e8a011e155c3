"""Serializers of the event API and the member tier endpoint.

Event values are checked by the import's cleaners and plausibility checks
(members.importing), so an event is accepted or rejected by the same rules
as the same row in an import file. Amounts are in the store currency with
at most two decimals, times run from 1990 to one day ahead, refunds are
stored negative, and a purchase has at least one item. Identifiers are
folded the same way (NFKC, trimmed), so a reference sent through the API
and the same reference in a file are one event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from members.importing.amounts import parse_amount
from members.importing.cleaning import (
    MAX_LENGTHS,
    clean_email,
    clean_phone,
    phone_e164,
)
from members.importing.dates import parse_datetime
from members.importing.errors import InvalidValue
from members.importing.lookups import channel_key
from members.importing.plausibility import (
    check_occurred_at,
    check_quantity,
    signed_amount,
)
from members.importing.text import fold_width, strip_invisible
from members.ingest import EventInput, EventStatus, InvalidEvent
from members.models import ActivityKind, Channel

AMOUNT_PATTERN = r"^[+-]?\d+(\.\d+)?$"
_AMOUNT = re.compile(AMOUNT_PATTERN)
# Activity.quantity is an IntegerField: a signed 32-bit integer.
MAX_QUANTITY = 2**31 - 1


def _invalid(value: str, error: InvalidValue) -> serializers.ValidationError:
    """Turn a cleaner's reason ("is not a valid amount") into a field error."""
    return serializers.ValidationError(f"{value!r} {error.reason}.")


class IdentifierField(serializers.CharField):
    """An id from the channel: trimmed, zero-width characters removed, NFKC."""

    def to_internal_value(self, data: Any) -> str:
        text = super().to_internal_value(data)
        value = fold_width(strip_invisible(text)).strip()
        if not value:
            self.fail("blank")
        return value


@extend_schema_field(
    {
        "type": "string",
        "format": "date-time",
        "example": "2024-06-01T14:30:00+08:00",
        "description": (
            "ISO 8601. A time without an offset is read in the program's time "
            "zone. Accepted from 1990-01-01 to one day after now."
        ),
    }
)
class OccurredAtField(serializers.Field):
    default_error_messages = {
        "invalid": gettext_lazy(
            "Expected a date and time as a string, e.g. 2024-06-01T14:30:00+08:00."
        )
    }

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return check_occurred_at(parse_datetime(data), timezone.now())
        except InvalidValue as error:
            raise _invalid(data, error) from None

    def to_representation(self, value: Any) -> str:
        return str(value.isoformat())


@extend_schema_field(
    {
        "type": "string",
        "pattern": AMOUNT_PATTERN,
        "example": "199.00",
        "description": (
            "In the store currency, with a decimal point and at most two "
            "decimals. A JSON number is accepted too. Refunds may be sent "
            "positive or negative and are stored negative."
        ),
    }
)
class AmountField(serializers.Field):
    default_error_messages = {
        "invalid": gettext_lazy(
            'Expected an amount such as "199.00": digits with a decimal point.'
        )
    }

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            self.fail("invalid")
        text = str(data).strip()
        if not _AMOUNT.fullmatch(text):
            self.fail("invalid")
        try:
            # numeric=True reads plain decimal-point notation and still checks
            # the size and the number of decimals.
            return parse_amount(text, numeric=True)
        except InvalidValue as error:
            raise _invalid(text, error) from None

    def to_representation(self, value: Any) -> str:
        return str(value)


class EventSerializer(serializers.Serializer):
    """One activity of a member: a purchase, refund, visit, review or referral."""

    # The context must hold "kinds" (members.importing.cleaning.kinds_by_label)
    # and "channel" (the token's channel).

    external_id = IdentifierField(
        max_length=MAX_LENGTHS["external_id"],
        help_text=gettext_lazy(
            "The member's id in this channel: a card number, shop account or OpenID."
        ),
    )
    reference = IdentifierField(
        max_length=MAX_LENGTHS["reference"],
        help_text=gettext_lazy(
            "The channel's own id for this event, such as an order or receipt "
            "number. Unique within the channel: sending it again records nothing."
        ),
    )
    occurred_at = OccurredAtField()
    amount = AmountField()
    kind = serializers.CharField(
        max_length=80,
        help_text=gettext_lazy(
            "The activity kind's code, e.g. purchase, refund, visit, review or "
            "referral."
        ),
    )
    quantity = serializers.IntegerField(
        default=1,
        min_value=0,
        max_value=MAX_QUANTITY,
        help_text=gettext_lazy("Items in the event; at least 1 for a purchase."),
    )
    channel = serializers.CharField(
        required=False,
        max_length=MAX_LENGTHS["channel"],
        help_text=gettext_lazy(
            "Optional. If given, it must be the token's own channel code."
        ),
    )
    phone = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=MAX_LENGTHS["phone"],
        help_text=gettext_lazy(
            "Optional. The member's phone, used only when external_id is new "
            "in this channel and the channel links new ids by phone: the id is "
            "then linked to the one member with this phone. A number without "
            "a country code is read in the program's region. An invalid "
            "number matches nobody."
        ),
    )
    email = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=MAX_LENGTHS["email"],
        help_text=gettext_lazy(
            "Optional. The member's e-mail address, used only when external_id "
            "is new in this channel and the channel links new ids by e-mail: "
            "the id is then linked to the one member with this address, "
            "compared case-insensitively."
        ),
    )

    def validate_phone(self, value: str) -> str:
        try:
            return clean_phone(value)
        except InvalidValue as error:
            # The value is personal data, so the message does not repeat it.
            raise serializers.ValidationError(
                _("The phone %(reason)s.") % {"reason": error.reason}
            ) from None

    def validate_email(self, value: str) -> str:
        if not value:
            return ""
        try:
            return clean_email(value)
        except InvalidValue:
            raise serializers.ValidationError(
                _("Enter a valid e-mail address, such as name@example.com.")
            ) from None

    def validate_kind(self, value: str) -> ActivityKind:
        kinds: Mapping[str, ActivityKind] = self.context["kinds"]
        kind = kinds.get(fold_width(value).strip().casefold())
        if kind is None:
            codes = sorted({kind.code for kind in kinds.values()})
            raise serializers.ValidationError(
                _("Unknown activity kind %(kind)r. Use one of: %(codes)s.")
                % {"kind": value, "codes": ", ".join(codes)}
            )
        return kind

    def validate_channel(self, value: str) -> str:
        channel: Channel = self.context["channel"]
        if channel_key(value.strip()) != channel_key(channel.code):
            raise serializers.ValidationError(
                _("The token acts for channel %(channel)s only.")
                % {"channel": channel.code}
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Apply the kind's rules to the amount and quantity.

        The same rules as an import file's rows: a refund's amount is stored
        negative, a purchase's cannot be negative, visits, reviews and
        referrals carry no amount, and a purchase has at least one item.
        """
        kind: ActivityKind = attrs["kind"]
        amount: Decimal = attrs["amount"]
        errors: dict[str, str] = {}
        try:
            attrs["amount"] = signed_amount(amount, kind)
        except InvalidValue as error:
            errors["amount"] = f"{str(amount)!r} {error.reason}."
        try:
            check_quantity(attrs["quantity"], kind)
        except InvalidValue as error:
            errors["quantity"] = f"{attrs['quantity']!r} {error.reason}."
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


def _error_lists(errors: Any) -> dict[str, list[str]]:
    """Return a serializer's errors as {field: [message, ...]}."""
    return {
        str(name): [str(message) for message in messages]
        for name, messages in errors.items()
    }


def _valid_reference(serializer: EventSerializer, data: Any) -> str | None:
    """Return an invalid event's reference if that field alone is valid.

    Only a valid reference is repeated in the response, so a NUL byte or an
    overlong value never reaches a response or a stored one.
    """
    raw = data.get("reference") if isinstance(data, dict) else None
    try:
        reference: str = serializer.fields["reference"].run_validation(raw)
    except serializers.ValidationError:
        return None
    return reference


def clean_events(
    raw_events: Sequence[Any],
    channel: Channel,
    kinds: Mapping[str, ActivityKind],
) -> list[EventInput | InvalidEvent]:
    """Validate each raw event on its own, keeping request order.

    One serializer validates every valid event, because DRF deep-copies a
    serializer's fields each time one is created. An invalid event gets a
    serializer of its own, so its errors read exactly as ``is_valid()``
    reports them.
    """
    items: list[EventInput | InvalidEvent] = []
    context = {"kinds": kinds, "channel": channel}
    validator = EventSerializer(context=context)
    for index, data in enumerate(raw_events):
        try:
            values = validator.run_validation(data)
        except serializers.ValidationError:
            serializer = EventSerializer(data=data, context=context)
            serializer.is_valid()
            items.append(
                InvalidEvent(
                    index=index,
                    reference=_valid_reference(serializer, data),
                    errors=_error_lists(serializer.errors),
                )
            )
            continue
        items.append(
            EventInput(
                index=index,
                external_id=values["external_id"],
                reference=values["reference"],
                occurred_at=values["occurred_at"],
                amount=values["amount"],
                kind=values["kind"],
                quantity=values["quantity"],
                phone_e164=phone_e164(values.get("phone", "")),
                email=values.get("email", ""),
            )
        )
    return items


@extend_schema_field(EventSerializer)
class RawEventField(serializers.DictField):
    """One event of a batch, left as given: clean_events() validates it."""


class EventBatchSerializer(serializers.Serializer):
    """A batch of events. Each event is validated and recorded on its own."""

    # Only the envelope is validated here; clean_events() validates each event
    # so that one invalid event does not reject the whole batch.

    channel = serializers.CharField(
        required=False,
        max_length=MAX_LENGTHS["channel"],
        help_text=gettext_lazy(
            "Optional. If given, it must be the token's own channel code."
        ),
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        # Built here, not at import, so the limit follows the settings in force.
        fields = super().get_fields()
        max_batch = settings.CRM_API_MAX_BATCH
        fields["events"] = serializers.ListField(
            child=RawEventField(),
            min_length=1,
            max_length=max_batch,
            help_text=gettext_lazy(
                "The events, each shaped like the body of POST /api/v1/events/."
            ),
            error_messages={
                "max_length": gettext_lazy(
                    "A batch holds at most {max_length} events. Split it into "
                    "smaller batches."
                ),
                "min_length": gettext_lazy("A batch needs at least one event."),
            },
        )
        return fields


class EventResultSerializer(serializers.Serializer):
    """The outcome of one event of a batch."""

    index = serializers.IntegerField(
        help_text=gettext_lazy("The event's position in the request, from 0.")
    )
    status = serializers.ChoiceField(choices=[status.value for status in EventStatus])
    reference = serializers.CharField(allow_null=True)
    member = serializers.UUIDField(
        allow_null=True,
        help_text=gettext_lazy(
            "The member's public id; null when no member matched or the event "
            "is invalid."
        ),
    )
    tier_before = serializers.CharField(
        allow_null=True,
        help_text=gettext_lazy("The member's tier before this request."),
    )
    tier_after = serializers.CharField(
        allow_null=True,
        help_text=gettext_lazy("The member's tier after this request."),
    )
    promoted = serializers.BooleanField(
        help_text=gettext_lazy("Whether this request promoted the member.")
    )
    detail = serializers.CharField(allow_blank=True)
    # DRF's metaclass moves declared fields out of the class body, so this
    # field and "fields" and "label" below do not shadow the attributes of
    # the same names that mypy finds on Serializer and Field.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        help_text=gettext_lazy("Problems per field of an invalid event."),
    )


class EventResponseSerializer(EventResultSerializer):
    """The outcome of one event."""

    # tiers_evaluated comes from the context, because EventResult lacks it.

    tiers_evaluated = serializers.SerializerMethodField(
        help_text=gettext_lazy(
            "False when no tier rules are published, so tiers were not evaluated."
        )
    )

    def get_tiers_evaluated(self, result: Any) -> bool:
        return bool(self.context["tiers_evaluated"])


class EventCountsSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicate = serializers.IntegerField()
    conflict = serializers.IntegerField()
    invalid = serializers.IntegerField()


class BatchResponseSerializer(serializers.Serializer):
    channel = serializers.CharField(source="channel.code")
    counts = EventCountsSerializer()
    promoted = serializers.IntegerField(
        help_text=gettext_lazy("Members this request promoted.")
    )
    tiers_evaluated = serializers.BooleanField()
    events = EventResultSerializer(many=True)


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text=gettext_lazy("A code, e.g. invalid."))
    detail = serializers.CharField()
    fields = serializers.DictField(  # type: ignore[assignment]
        required=False,
        help_text=gettext_lazy("Problems per field, for error code invalid."),
    )


class TierBadgeSerializer(serializers.Serializer):
    name = serializers.CharField()
    colour = serializers.CharField()
    since = serializers.DateTimeField(allow_null=True)


class RequirementSerializer(serializers.Serializer):
    metric = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    value = serializers.DecimalField(max_digits=None, decimal_places=None)
    target = serializers.DecimalField(max_digits=None, decimal_places=None)
    value_text = serializers.CharField()
    target_text = serializers.CharField()
    progress_text = serializers.CharField()
    percent = serializers.IntegerField()
    met = serializers.BooleanField()
    window = serializers.CharField()
    window_text = serializers.CharField()
    missing = serializers.DecimalField(max_digits=None, decimal_places=None)
    missing_text = serializers.CharField()


class NextTierSerializer(serializers.Serializer):
    name = serializers.CharField(source="badge.name")
    colour = serializers.CharField(source="badge.colour")
    reached = serializers.BooleanField()
    rule_text = serializers.CharField()
    sentence = serializers.CharField()
    requirements = RequirementSerializer(many=True)


class RetentionSerializer(serializers.Serializer):
    heading = serializers.CharField()
    sentence = serializers.CharField()
    met = serializers.BooleanField()
    entry_met = serializers.BooleanField()
    status_text = serializers.CharField()
    requirements = RequirementSerializer(many=True)


class TierHoldSerializer(serializers.Serializer):
    text = serializers.CharField()
    review_day = serializers.DateField(allow_null=True)
    grace_day = serializers.DateField(allow_null=True)
    in_grace = serializers.BooleanField()


class ProgressSerializer(serializers.Serializer):
    as_of = serializers.DateTimeField()
    next_tier = NextTierSerializer(
        allow_null=True, help_text=gettext_lazy("Null at the top tier.")
    )
    retention = RetentionSerializer(allow_null=True)
    hold = TierHoldSerializer(allow_null=True)


class MemberTierSerializer(serializers.Serializer):
    """A member's tier and progress, with texts in the request's language."""

    member = serializers.UUIDField(source="public_id")
    tier = TierBadgeSerializer(allow_null=True)
    review_at = serializers.DateTimeField(allow_null=True)
    grace_until = serializers.DateTimeField(allow_null=True)
    progress = ProgressSerializer(
        allow_null=True,
        help_text=gettext_lazy("Null when no tier rules are published."),
    )
