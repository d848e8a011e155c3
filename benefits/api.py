"""The benefits REST API for channels: redeem a grant, list a member's grants.

Clients authenticate with a DRF token ("Authorization: Token <key>") or a
staff session. Redeeming needs the benefits.redeem_grant permission and
listing needs benefits.view_grant. Errors are JSON objects with an "error"
code and a "detail" sentence.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from django.contrib.auth.models import AbstractBaseUser
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from benefits.models import Grant
from benefits.redemption import (
    GrantNotFound,
    InvalidRedemption,
    RedemptionRejected,
    redeem,
)
from benefits.serializers import (
    BenefitErrorSerializer,
    MemberGrantsSerializer,
    RedemptionRequestSerializer,
    RedemptionResultSerializer,
)
from members.models import Member


class CanRedeemGrants(BasePermission):
    message = "Redeeming needs the 'Can redeem benefit grants' permission."

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user.has_perm("benefits.redeem_grant"))


class CanViewGrants(BasePermission):
    message = "Listing grants needs the 'Can view benefit grant' permission."

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user.has_perm("benefits.view_grant"))


def _error(code: str, detail: str, status_code: int, **extra: Any) -> Response:
    return Response({"error": code, "detail": detail, **extra}, status=status_code)


AUTH_ERRORS = {
    401: OpenApiResponse(description="Missing or invalid token or session."),
    403: OpenApiResponse(description="The user lacks the permission."),
}


class RedemptionView(APIView):
    """POST {"code" or "grant", "channel", "reference"}: redeem one grant.

    200 with the grant when redeemed, or when the same channel and reference
    already redeemed it ("replayed": true). 400 for invalid input, 404 for
    an unknown code, 409 when the grant cannot be redeemed (already
    redeemed, expired, ended, waiting for approval or stock, rejected).
    """

    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated, CanRedeemGrants]

    @extend_schema(
        operation_id="redeem_grant",
        summary="Redeem a benefit grant",
        request=RedemptionRequestSerializer,
        responses={
            200: RedemptionResultSerializer,
            400: OpenApiResponse(BenefitErrorSerializer, description="Invalid input."),
            404: OpenApiResponse(BenefitErrorSerializer, description="Unknown code."),
            409: OpenApiResponse(
                BenefitErrorSerializer, description="The grant cannot be redeemed."
            ),
            **AUTH_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = RedemptionRequestSerializer(data=request.data)
        if not serializer.is_valid():
            return _error(
                "invalid",
                "The request is invalid; 'fields' lists the problems.",
                status.HTTP_400_BAD_REQUEST,
                fields=serializer.errors,
            )
        data = serializer.validated_data

        try:
            result = redeem(
                code=data.get("code"),
                grant_id=data.get("grant"),
                channel=data["channel"],
                reference=data["reference"],
                # IsAuthenticated has run, so this is a real user.
                user=cast(AbstractBaseUser, request.user),
            )
        except GrantNotFound as error:
            return _error(error.code, str(error), status.HTTP_404_NOT_FOUND)
        except InvalidRedemption as error:
            return _error(error.code, str(error), status.HTTP_400_BAD_REQUEST)
        except RedemptionRejected as error:
            return _error(error.code, str(error), status.HTTP_409_CONFLICT)

        body = {"grant": result.grant, "replayed": result.replayed}
        return Response(RedemptionResultSerializer(body).data)


class MemberGrantsView(APIView):
    """GET: every grant of the member with this public id, newest first.

    ``?status=issued`` (or another status) narrows the list. 404 when no
    member has the id.
    """

    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated, CanViewGrants]

    @extend_schema(
        operation_id="list_member_grants",
        summary="List a member's benefit grants",
        parameters=[
            OpenApiParameter(
                "status",
                str,
                enum=Grant.Status.values,
                required=False,
                description="Only grants with this status.",
            )
        ],
        responses={
            200: MemberGrantsSerializer,
            400: OpenApiResponse(BenefitErrorSerializer, description="Unknown status."),
            404: OpenApiResponse(BenefitErrorSerializer, description="Unknown member."),
            **AUTH_ERRORS,
        },
    )
    def get(self, request: Request, public_id: uuid.UUID) -> Response:
        member_id = (
            Member.objects.filter(public_id=public_id)
            .values_list("pk", flat=True)
            .first()
        )
        if member_id is None:
            return _error(
                "not_found",
                f"No member has public id {public_id}.",
                status.HTTP_404_NOT_FOUND,
            )
        grants = (
            Grant.objects.filter(member_id=member_id)
            .select_related("benefit", "tier", "redeemed_channel")
            .order_by("-created_at", "-pk")
        )
        status_filter = request.query_params.get("status")
        if status_filter is not None:
            if status_filter not in Grant.Status.values:
                return _error(
                    "invalid",
                    f"Unknown status {status_filter!r}. Use one of "
                    f"{', '.join(Grant.Status.values)}.",
                    status.HTTP_400_BAD_REQUEST,
                )
            grants = grants.filter(status=status_filter)

        body = {"member": public_id, "grants": grants}
        return Response(MemberGrantsSerializer(body).data)
