"""Identity across channels: matching new channel ids to members, and duplicates.

A member is found by its id in a channel (ChannelIdentity). When a channel
sends an id it has not sent before, staff may let it match an existing
member by normalised phone (Channel.match_phone) or by e-mail, compared
case-insensitively (Channel.match_email). A match links the new id to that
member only when exactly one live member matches. When several do, the id
gets a member of its own, and suspected_duplicates() lists the members that
share the phone or e-mail, so that staff can merge them
(members.merging).

Merged members (``merged_into`` set) are never matched and never listed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.paginator import Page, Paginator
from django.db.models import Count, F, Q, QuerySet, Value
from django.db.models.functions import Lower

from members.importing.lookups import chunked
from members.models import Channel, ChannelIdentity, Member

logger = logging.getLogger(__name__)

# Groups of suspected duplicates shown per admin page.
DUPLICATE_GROUPS_PER_PAGE = 25

PHONE = "phone"
EMAIL = "email"


def email_key(email: str) -> str:
    """Return the form e-mail addresses are compared in: trimmed, lower case."""
    # NOTE: SQLite's LOWER() folds ASCII letters only, so on SQLite an address
    # with non-ASCII capitals matches only when written the same way.
    return email.strip().lower()


@dataclass(frozen=True)
class ContactRecord:
    """A channel id that is not known in its channel, and the contact data sent with it.

    ``phone_e164`` is the normalised phone (empty when missing or invalid).
    """

    external_id: str
    phone_e164: str = ""
    email: str = ""


def _live_members() -> QuerySet[Member]:
    return Member.objects.filter(merged_into__isnull=True)


def _members_by_phone(phones: set[str]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = defaultdict(set)
    for chunk in chunked(sorted(phones)):
        rows = (
            _live_members().filter(phone_e164__in=chunk).values_list("phone_e164", "pk")
        )
        for phone, member_id in rows:
            found[phone].add(member_id)
    return found


def _members_by_email(emails: set[str]) -> dict[str, set[int]]:
    # NOTE: the filter on LOWER(email) cannot use the plain index on email, so
    # each chunk scans the member table. An index on LOWER(email) would need
    # a migration.
    found: dict[str, set[int]] = defaultdict(set)
    for chunk in chunked(sorted(emails)):
        rows = (
            _live_members()
            .annotate(email_key=Lower("email"))
            .filter(email_key__in=chunk)
            .values_list("email_key", "pk")
        )
        for key, member_id in rows:
            found[key].add(member_id)
    return found


@dataclass(frozen=True)
class ContactMatch:
    """The member a new external id is linked to, and the contact data that matched.

    ``matched_by`` contains PHONE, EMAIL or both, in that order.
    """

    member_id: int
    matched_by: tuple[str, ...]


def match_contacts(
    channel: Channel, records: Iterable[ContactRecord]
) -> dict[str, ContactMatch]:
    """Return the member to link to each new external id, by external id.

    The records are ids of ``channel`` without a ChannelIdentity there. An
    id is matched by phone when the channel has match_phone set, and by
    e-mail when it has match_email set. Its candidates are the live members
    with any of the phones or e-mails given with it, and it is matched only
    when there is exactly one candidate. An id given with a phone of one
    member and the e-mail of another is therefore not matched.

    Costs one query per chunk of distinct phones and one per chunk of
    distinct e-mails, whatever the number of records.
    """
    if not (channel.match_phone or channel.match_email):
        return {}
    phones: dict[str, set[str]] = defaultdict(set)
    emails: dict[str, set[str]] = defaultdict(set)
    external_ids: set[str] = set()
    for record in records:
        external_ids.add(record.external_id)
        if channel.match_phone and record.phone_e164:
            phones[record.external_id].add(record.phone_e164)
        if channel.match_email and record.email.strip():
            emails[record.external_id].add(email_key(record.email))
    by_phone = _members_by_phone(set().union(*phones.values()))
    by_email = _members_by_email(set().union(*emails.values()))

    matches: dict[str, ContactMatch] = {}
    ambiguous = 0
    for external_id in sorted(phones.keys() | emails.keys()):
        phone_members: set[int] = set()
        for phone in phones.get(external_id, ()):
            phone_members |= by_phone.get(phone, set())
        email_members: set[int] = set()
        for email in emails.get(external_id, ()):
            email_members |= by_email.get(email, set())
        candidates = phone_members | email_members
        if len(candidates) == 1:
            matched_by = tuple(
                kind
                for kind, found in ((PHONE, phone_members), (EMAIL, email_members))
                if found
            )
            matches[external_id] = ContactMatch(candidates.pop(), matched_by)
        elif candidates:
            ambiguous += 1
    logger.info(
        "identity matching channel_id=%s ids=%d matched=%d ambiguous=%d",
        channel.pk,
        len(external_ids),
        len(matches),
        ambiguous,
    )
    return matches


def match_members(channel: Channel, records: Iterable[ContactRecord]) -> dict[str, int]:
    """Return the member id to link to each new external id (see match_contacts)."""
    return {
        external_id: match.member_id
        for external_id, match in match_contacts(channel, records).items()
    }


# Suspected duplicates


@dataclass(frozen=True)
class DuplicateMember:
    """A member of a duplicate group, with what the admin page shows of it."""

    member: Member
    channels: list[str]
    activity_count: int


@dataclass
class DuplicateGroup:
    """Live members that share one normalised phone or one e-mail address.

    ``kind`` is PHONE or EMAIL and ``value`` the shared phone (E.164) or
    e-mail address in lower case.
    """

    kind: str
    value: str
    size: int
    members: list[DuplicateMember] = field(default_factory=list)


def _duplicate_keys() -> QuerySet[Member, tuple[str, str, int]]:
    """Return (kind, shared value, member count) of every duplicate group.

    Each half is a GROUP BY ... HAVING COUNT(*) > 1 over the live members,
    and the union is ordered by kind, then value, for stable pages.
    """
    live = _live_members().order_by()
    by_phone = (
        live.exclude(phone_e164="")
        .values(key=F("phone_e164"))
        .annotate(size=Count("pk"), kind=Value(PHONE))
        .filter(size__gt=1)
        .values_list("kind", "key", "size")
    )
    by_email = (
        live.exclude(email="")
        .values(key=Lower("email"))
        .annotate(size=Count("pk"), kind=Value(EMAIL))
        .filter(size__gt=1)
        .values_list("kind", "key", "size")
    )
    return by_phone.union(by_email, all=True).order_by("kind", "key")


def _fill_groups(groups: list[DuplicateGroup]) -> None:
    """Load the members of ``groups``: two queries for any number of groups."""
    phones = [group.value for group in groups if group.kind == PHONE]
    emails = [group.value for group in groups if group.kind == EMAIL]
    if not groups:
        return
    members = list(
        _live_members()
        .annotate(email_key=Lower("email"), activity_count=Count("activities"))
        .filter(Q(phone_e164__in=phones) | Q(email_key__in=emails))
        .select_related("tier")
        .order_by("pk")
    )
    channels: dict[int, list[str]] = defaultdict(list)
    identities = (
        ChannelIdentity.objects.filter(member__in=[m.pk for m in members])
        .order_by("channel__code", "pk")
        .values_list("member_id", "channel__code")
    )
    for member_id, code in identities:
        if code not in channels[member_id]:
            channels[member_id].append(code)
    by_key: dict[tuple[str, str], DuplicateGroup] = {
        (group.kind, group.value): group for group in groups
    }
    for member in members:
        entry = DuplicateMember(
            member=member,
            channels=channels[member.pk],
            activity_count=member.activity_count,  # type: ignore[attr-defined]
        )
        email = member.email_key  # type: ignore[attr-defined]
        for key in ((PHONE, member.phone_e164), (EMAIL, email)):
            group = by_key.get(key)
            if group is not None:
                group.members.append(entry)


def suspected_duplicates(
    page_number: int | str = 1, per_page: int = DUPLICATE_GROUPS_PER_PAGE
) -> tuple[Page, list[DuplicateGroup]]:
    """Return one page of duplicate groups and the groups on it, members loaded.

    A member with both a shared phone and a shared e-mail appears in two
    groups. An invalid or out-of-range page number gives the last page, as
    Paginator.get_page() does. Costs four queries: the group count, the
    page of groups, their members and the members' channels.
    """
    # NOTE: the grouping reads every live member's phone and e-mail, which is
    # a full scan of the member table on each page view.
    paginator = Paginator(_duplicate_keys(), per_page)
    page = paginator.get_page(page_number)
    groups = [
        DuplicateGroup(kind=kind, value=value, size=size)
        for kind, value, size in page.object_list
    ]
    _fill_groups(groups)
    return page, groups
