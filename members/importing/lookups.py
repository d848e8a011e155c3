"""Set-based look-ups shared by the writers: channels and channel identities.

Every look-up costs one query per chunk of values, never one per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from django.db.models import Case, IntegerField, OuterRef, Subquery, Value, When

from members.models import Channel, ChannelIdentity, ImportedMember

T = TypeVar("T")
# Values per IN (...) list: below SQLite's historical limit of 999 query
# parameters, with room for the query's other parameters.
CHUNK_SIZE = 900


def chunked(items: Sequence[T], size: int = CHUNK_SIZE) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def channel_key(code: str) -> str:
    """Return the form channel codes are matched in: "Tmall" is "tmall"."""
    return code.casefold()


class ChannelDirectory:
    """All channels by code, matched case-insensitively, creating missing ones.

    Channels are few (stores, shops, apps), so all of them load in one query.
    """

    def __init__(self) -> None:
        self._by_key = {channel_key(c.code): c for c in Channel.objects.all()}

    def get(self, code: str) -> Channel | None:
        return self._by_key.get(channel_key(code))

    def create_missing(self, codes: Iterable[str]) -> list[str]:
        """Create channels of kind "other" for unknown codes; return the codes."""
        missing: dict[str, str] = {}
        for code in codes:
            if channel_key(code) not in self._by_key:
                missing.setdefault(channel_key(code), code)
        if not missing:
            return []
        created = Channel.objects.bulk_create(
            [
                Channel(code=code, name=code, kind=Channel.Kind.OTHER)
                for code in missing.values()
            ]
        )
        if any(channel.pk is None for channel in created):
            created = list(Channel.objects.filter(code__in=missing.values()))
        for channel in created:
            self._by_key[channel_key(channel.code)] = channel
        return sorted(missing.values())


def identities_for(external_ids: Iterable[str]) -> list[tuple[int, str, int]]:
    """Return (channel id, external id, member id) for identities with these ids."""
    found: list[tuple[int, str, int]] = []
    for chunk in chunked(sorted(set(external_ids))):
        found.extend(
            ChannelIdentity.objects.filter(external_id__in=chunk).values_list(
                "channel_id", "external_id", "member_id"
            )
        )
    return found


def identities_with_batch_lines(
    external_ids: Iterable[str], batch_id: int | None
) -> dict[tuple[int, str], tuple[int, int | None]]:
    """Return {(channel id, external id): (member id, line)} for these ids.

    ``line`` is set when the identity was created by import batch
    ``batch_id``: it is the line of that batch's ImportedMember row for the
    member, the line that created the identity. It is None otherwise.
    """
    queryset = ChannelIdentity.objects.all()
    if batch_id is not None:
        batch_line = ImportedMember.objects.filter(
            batch_id=batch_id, member_id=OuterRef("member_id")
        ).values("line")[:1]
        queryset = queryset.annotate(
            batch_line=Case(
                When(import_batch_id=batch_id, then=Subquery(batch_line)),
                default=Value(None, output_field=IntegerField()),
            )
        )
    else:
        queryset = queryset.annotate(
            batch_line=Value(None, output_field=IntegerField())
        )
    found: dict[tuple[int, str], tuple[int, int | None]] = {}
    for chunk in chunked(sorted(set(external_ids))):
        rows = queryset.filter(external_id__in=chunk).values_list(
            "channel_id", "external_id", "member_id", "batch_line"
        )
        for channel_id, external_id, member_id, line in rows:
            found[(channel_id, external_id)] = (member_id, line)
    return found
