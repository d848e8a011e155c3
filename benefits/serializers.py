"""JSON shapes of the benefits API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from benefits.models import Grant
from members.models import Channel


class RedemptionRequestSerializer(serializers.Serializer[Any]):
    """A channel's request to redeem one grant, by code or by grant id."""

    code = serializers.CharField(required=False, max_length=40)
    grant = serializers.IntegerField(required=False, min_value=1)
    channel = serializers.SlugRelatedField(
        slug_field="code",
        queryset=Channel.objects.all(),
        error_messages={
            "does_not_exist": "No channel has code {value}; use a channel code "
            "from the admin's channel list."
        },
    )
    reference = serializers.CharField(max_length=100, trim_whitespace=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("code" in attrs) == ("grant" in attrs):
            raise serializers.ValidationError(
                "Give either 'code' or 'grant' (the grant id), not both."
            )
        return attrs


class GrantSerializer(serializers.ModelSerializer[Grant]):
    benefit = serializers.CharField(source="benefit.name")
    kind = serializers.CharField(source="benefit.kind")
    value = serializers.DecimalField(
        source="benefit.value", max_digits=12, decimal_places=2, allow_null=True
    )
    tier = serializers.CharField(source="tier.name")
    # A plain string in the schema, because a second "status" enum makes
    # drf-spectacular name the event API's status enum by a hash and warn.
    status = serializers.CharField(
        help_text="One of: " + ", ".join(Grant.Status.values) + "."
    )
    redeemed_channel: serializers.SlugRelatedField[Channel] = (
        serializers.SlugRelatedField(slug_field="code", read_only=True)
    )

    class Meta:
        model = Grant
        fields = [
            "id",
            "code",
            "benefit",
            "kind",
            "value",
            "tier",
            "origin",
            "status",
            "issued_at",
            "expires_at",
            "approval_due_at",
            "auto_approved",
            "decided_at",
            "redeemed_at",
            "redeemed_channel",
            "redemption_reference",
        ]
        read_only_fields = fields


class RedemptionResultSerializer(serializers.Serializer[Any]):
    grant = GrantSerializer()
    replayed = serializers.BooleanField(
        help_text="True when the same channel and reference redeemed it before."
    )


class MemberGrantsSerializer(serializers.Serializer[Any]):
    member = serializers.UUIDField(help_text="The member's public id.")
    grants = GrantSerializer(many=True)


class BenefitErrorSerializer(serializers.Serializer[Any]):
    error = serializers.CharField(help_text="A code such as already_redeemed.")
    detail = serializers.CharField(help_text="What failed and what to do next.")

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # Added here because a class attribute named "fields" would hide
        # Serializer.fields.
        fields = super().get_fields()
        fields["fields"] = serializers.DictField(
            required=False, help_text="Problems per request field, for 'invalid'."
        )
        return fields
