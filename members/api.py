"""The event API and the member tier endpoint, for channels' tills and apps.

Every endpoint needs ``Authorization: Bearer <channel token>``. The token
decides the channel: a body that names another channel is rejected with
403, and the member endpoint shows only members with an id in the token's
channel.

- ``POST /api/v1/events/`` records one event: 201 created, 200 duplicate
  (already recorded with the same content), 409 conflict (the reference is
  recorded with other content), 422 invalid.
- ``POST /api/v1/events/batch/`` records up to CRM_API_MAX_BATCH events,
  each with its own status (see members.ingest for the per-event
  semantics): 200 when every event is created or a duplicate, 207 when any
  is invalid or in conflict.
- ``GET /api/v1/members/<public_id>/`` returns the member's tier, review
  date and progress to the next tier, and no personal data.

A POST may carry an ``Idempotency-Key`` header (1 to 255 visible ASCII
characters, unique per channel). Repeating the key with the same body
returns the stored status and body with ``Idempotent-Replayed: true`` and
records nothing. Repeating it with a different body is rejected with 409.
Without the header, the (channel, reference) pair still makes a retry
safe. Bodies over CRM_API_MAX_REQUEST_BYTES are rejected with 413 before
they are read.

Request-level errors are JSON objects with an ``error`` code and a
``detail`` sentence, plus ``fields`` for invalid input.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import exceptions, status
from rest_framework.exceptions import ErrorDetail
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from members.api_auth import ChannelTokenAuthentication, HasChannelToken, token_of
from members.importing.cleaning import kinds_by_label
from members.importing.lookups import channel_key
from members.ingest import (
    EventStatus,
    IdempotencyKeyReused,
    IngestResult,
    StoredResponse,
    record_events,
    request_hash,
    respond_once,
    summarize_ids,
)
from members.models import ChannelToken, Member
from members.serializers import (
    BatchResponseSerializer,
    ErrorSerializer,
    EventBatchSerializer,
    EventResponseSerializer,
    EventSerializer,
    MemberTierSerializer,
    clean_events,
)
from members.throttling import ChannelTokenRateThrottle
from tiers.ladder import LadderError
from tiers.progress import MemberProgress, TierBadge, make_badge, member_progress

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Visible ASCII (! to ~), so a key survives every HTTP stack unchanged.
_IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,255}$")

SINGLE_STATUS = {
    EventStatus.CREATED: status.HTTP_201_CREATED,
    EventStatus.DUPLICATE: status.HTTP_200_OK,
    EventStatus.CONFLICT: status.HTTP_409_CONFLICT,
    EventStatus.INVALID: status.HTTP_422_UNPROCESSABLE_ENTITY,
}


class CheckedJSONParser(JSONParser):
    """JSONParser that also rejects, with 400, two kinds of body that fail later.

    Very deep nesting makes the parser raise RecursionError, and an escaped
    lone surrogate ("\\ud800") gives a string that cannot be encoded for a
    response, a log line or PostgreSQL. Both would otherwise end in a 500.
    """

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
            json.dumps(data, ensure_ascii=False).encode()
        except RecursionError:
            raise exceptions.ParseError(
                _("JSON parse error - the body is nested too deeply.")
            ) from None
        except UnicodeEncodeError:
            raise exceptions.ParseError(
                _(
                    "JSON parse error - the body contains an escaped lone "
                    "surrogate such as \\ud800, which is not valid Unicode."
                )
            ) from None
        return data


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"


class KeyReused(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_key_reused"


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Render DRF's errors as {"error": code, "detail": sentence[, "fields"]}."""
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"body": exc.detail}
        response.data = {
            "error": "invalid",
            "detail": _("The request is invalid; 'fields' lists the problems."),
            "fields": fields,
        }
        return response
    detail = response.data.get("detail") if isinstance(response.data, dict) else None
    code = detail.code if isinstance(detail, ErrorDetail) else "error"
    response.data = {"error": code, "detail": str(detail or response.status_text)}
    return response


def _content_length(request: Request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _idempotency_key(request: Request) -> str | None:
    raw = request.headers.get(IDEMPOTENCY_HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise exceptions.ValidationError(
            {
                IDEMPOTENCY_HEADER: [
                    _(
                        "Invalid Idempotency-Key. Use 1 to 255 visible ASCII "
                        "characters, e.g. a UUID."
                    )
                ]
            }
        )
    return key


def _check_channel(token: ChannelToken, payloads: list[Any]) -> None:
    """Reject the request with 403 if a payload names another channel."""
    channel = token.channel
    for payload in payloads:
        named = payload.get("channel") if isinstance(payload, dict) else None
        if not isinstance(named, str):
            continue
        if channel_key(named.strip()) != channel_key(channel.code):
            logger.info(
                "event API rejected a body naming another channel channel_id=%s "
                "token_id=%s",
                channel.pk,
                token.pk,
            )
            raise exceptions.PermissionDenied(
                _(
                    "This token acts for channel %(channel)s only, but the request "
                    "names channel %(named)s. Send it with that channel's token."
                )
                % {"channel": channel.code, "named": repr(named.strip()[:64])},
                code="wrong_channel",
            )


def _log_result(
    kind: str, token: ChannelToken, result: IngestResult, status_code: int
) -> None:
    counts = result.counts
    logger.info(
        "event API %s channel_id=%s token_id=%s status=%d events=%d created=%d "
        "duplicate=%d conflict=%d invalid=%d promoted=%d member_ids=%s",
        kind,
        result.channel.pk,
        token.pk,
        status_code,
        len(result.events),
        counts[EventStatus.CREATED],
        counts[EventStatus.DUPLICATE],
        counts[EventStatus.CONFLICT],
        counts[EventStatus.INVALID],
        result.promoted,
        summarize_ids(r.member_id for r in result.events if r.member_id is not None),
    )


IDEMPOTENCY_PARAMETER = OpenApiParameter(
    name=IDEMPOTENCY_HEADER,
    location=OpenApiParameter.HEADER,
    required=False,
    pattern=_IDEMPOTENCY_KEY.pattern,
    description=(
        "Optional, unique per channel. Repeating it with the same body returns "
        "the stored response with the Idempotent-Replayed: true header; with a "
        "different body it is rejected with 409."
    ),
)
ERROR_RESPONSES = {
    400: OpenApiResponse(ErrorSerializer, description="Malformed request."),
    401: OpenApiResponse(
        ErrorSerializer, description="Missing, invalid or revoked token."
    ),
    403: OpenApiResponse(
        ErrorSerializer, description="The body names another channel."
    ),
    413: OpenApiResponse(ErrorSerializer, description="The body is too large."),
    415: OpenApiResponse(ErrorSerializer, description="The body is not JSON."),
    429: OpenApiResponse(
        ErrorSerializer,
        description="Too many requests with this token; retry after Retry-After "
        "seconds.",
    ),
}


class ChannelAPIView(APIView):
    """Base of the channel endpoints: channel tokens only, JSON, capped bodies."""

    authentication_classes = [ChannelTokenAuthentication]
    permission_classes = [HasChannelToken]
    parser_classes = [CheckedJSONParser]
    renderer_classes = [JSONRenderer]
    throttle_classes = [ChannelTokenRateThrottle]

    def get_exception_handler(self) -> Any:
        return api_exception_handler

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        max_bytes = settings.CRM_API_MAX_REQUEST_BYTES
        size = _content_length(request)
        if size > max_bytes:
            raise RequestTooLarge(
                _(
                    "The request body is %(size)s bytes, more than the limit of "
                    "%(max)s bytes. Send fewer events per request."
                )
                % {"size": size, "max": max_bytes}
            )

    def respond_once(
        self,
        request: Request,
        payload: Any,
        respond: Callable[[], tuple[int, dict[str, Any]]],
    ) -> StoredResponse:
        """Run ``respond`` once per Idempotency-Key; see ingest.respond_once."""
        token = token_of(request)
        key = _idempotency_key(request)
        digest = request_hash(request.path, payload)
        try:
            stored = respond_once(token.channel, key, digest, respond)
        except IdempotencyKeyReused:
            logger.info(
                "event API rejected a reused Idempotency-Key channel_id=%s token_id=%s",
                token.channel_id,
                token.pk,
            )
            raise KeyReused(
                _(
                    "This Idempotency-Key was already used with a different "
                    "request. Use a new key for a new request."
                )
            ) from None
        if stored.replayed:
            logger.info(
                "event API replayed a stored response channel_id=%s token_id=%s "
                "status=%d",
                token.channel_id,
                token.pk,
                stored.status_code,
            )
        return stored


def _stored_response(stored: StoredResponse) -> Response:
    headers = {REPLAYED_HEADER: "true"} if stored.replayed else None
    return Response(stored.body, status=stored.status_code, headers=headers)


class EventView(ChannelAPIView):
    """Record one event for a member with an id in the token's channel.

    An id the channel has not sent before is linked to the one member whose
    phone or e-mail matches the event's, when the channel allows it (see
    members.identity). The member's tier is evaluated in the same request,
    and the response reports the tier before and after and whether the
    member was promoted. Status 201 means the event was recorded, 200 that
    it was already recorded with the same content, 409 that its reference
    is recorded with other content, and 422 that it is invalid. Nothing is
    recorded in the last two cases.
    """

    @extend_schema(
        operation_id="record_event",
        tags=["events"],
        summary="Record one event",
        request=EventSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: OpenApiResponse(EventResponseSerializer, description="Created."),
            200: OpenApiResponse(
                EventResponseSerializer,
                description="Duplicate: already recorded with the same content.",
            ),
            409: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="EventConflict",
                    serializers=[EventResponseSerializer, ErrorSerializer],
                    resource_type_field_name=None,
                ),
                description=(
                    "The reference is recorded with other content, or the "
                    "Idempotency-Key was used with a different body."
                ),
            ),
            422: OpenApiResponse(
                EventResponseSerializer, description="Invalid; see 'errors'."
            ),
            **ERROR_RESPONSES,
        },
    )
    def post(self, request: Request) -> Response:
        token = token_of(request)
        payload = request.data
        if not isinstance(payload, dict):
            raise exceptions.ValidationError(
                _("Expected a JSON object: one event. Send lists to /events/batch/.")
            )
        _check_channel(token, [payload])

        def respond() -> tuple[int, dict[str, Any]]:
            items = clean_events([payload], token.channel, kinds_by_label())
            result = record_events(token.channel, items)
            (event,) = result.events
            status_code = SINGLE_STATUS[event.status]
            context = {"tiers_evaluated": result.tiers_evaluated}
            body = EventResponseSerializer(event, context=context).data
            _log_result("event", token, result, status_code)
            return status_code, dict(body)

        return _stored_response(self.respond_once(request, payload, respond))


class EventBatchView(ChannelAPIView):
    """Record a batch of events, each with its own status.

    Valid events are recorded even when others in the batch are invalid or
    in conflict. Each member with a recorded event is evaluated once, after
    the whole batch, so a purchase and its refund in one batch cancel out.
    Status 200 means every event was created or is a duplicate; 207 means
    at least one event was not recorded.
    """

    @extend_schema(
        operation_id="record_event_batch",
        tags=["events"],
        summary="Record a batch of events",
        request=EventBatchSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            200: OpenApiResponse(
                BatchResponseSerializer,
                description="Every event was created or is a duplicate.",
            ),
            207: OpenApiResponse(
                BatchResponseSerializer,
                description=(
                    "Some events are invalid or in conflict and were not "
                    "recorded; the others were. See each event's status."
                ),
            ),
            409: OpenApiResponse(
                ErrorSerializer,
                description="The Idempotency-Key was used with a different body.",
            ),
            **ERROR_RESPONSES,
        },
    )
    def post(self, request: Request) -> Response:
        token = token_of(request)
        envelope = EventBatchSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        raw_events = envelope.validated_data["events"]
        _check_channel(token, [envelope.validated_data, *raw_events])

        def respond() -> tuple[int, dict[str, Any]]:
            items = clean_events(raw_events, token.channel, kinds_by_label())
            result = record_events(token.channel, items)
            status_code = (
                status.HTTP_200_OK
                if result.all_accepted
                else status.HTTP_207_MULTI_STATUS
            )
            body = BatchResponseSerializer(result).data
            _log_result("batch", token, result, status_code)
            return status_code, dict(body)

        return _stored_response(self.respond_once(request, request.data, respond))


@dataclass(frozen=True)
class MemberTier:
    """The member endpoint's response: tier, dates and progress, no personal data."""

    public_id: uuid.UUID
    tier: TierBadge | None
    review_at: dt.datetime | None
    grace_until: dt.datetime | None
    progress: MemberProgress | None


class MemberTierView(ChannelAPIView):
    """Read the tier, review date and progress of a member, for tills and apps.

    Only members with an id in the token's channel are found. The response
    contains no name, phone or e-mail. Texts follow the Accept-Language header.
    """

    @extend_schema(
        operation_id="member_tier",
        tags=["members"],
        summary="Read a member's tier and progress",
        responses={
            200: MemberTierSerializer,
            401: OpenApiResponse(ErrorSerializer, description="Missing or bad token."),
            404: OpenApiResponse(
                ErrorSerializer,
                description="No member with this public id has an id in the channel.",
            ),
        },
    )
    def get(self, request: Request, public_id: uuid.UUID) -> Response:
        token = token_of(request)
        # Members of other channels are "not found", not "forbidden", so a
        # token cannot probe which public ids exist.
        member = (
            Member.objects.select_related("tier")
            .filter(public_id=public_id, identities__channel=token.channel)
            .first()
        )
        if member is None:
            raise exceptions.NotFound(
                _("No member with public id %(id)s has an id in channel %(channel)s.")
                % {"id": public_id, "channel": token.channel.code}
            )

        try:
            progress = member_progress(member)
        except LadderError as error:
            logger.warning(
                "member tier read without progress member_id=%s error=%s",
                member.pk,
                error,
            )
            progress = None
        tier = None
        if member.tier is not None:
            tier = make_badge(member.tier.name, member.tier.colour, member.tier_since)
        view = MemberTier(
            public_id=member.public_id,
            tier=tier,
            review_at=member.review_at,
            grace_until=member.grace_until,
            progress=progress,
        )
        logger.info(
            "member tier read channel_id=%s token_id=%s member_id=%s",
            token.channel_id,
            token.pk,
            member.pk,
        )
        return Response(MemberTierSerializer(view).data)
