"""Rule versions in the admin: draft editing, copy, simulate, publish, history."""

from __future__ import annotations

import datetime as dt
import io
import sys
import types
from dataclasses import dataclass
from decimal import Decimal

import openpyxl
import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from members.models import AuditAction, AuditEvent, Member
from tests.conftest import LONG_AGO, SHANGHAI, make_member, record, standard_spec
from tiers import admin as tiers_admin
from tiers.evaluation import evaluate
from tiers.jobs import reevaluate_everyone
from tiers.ladder import Ladder
from tiers.models import (
    GrowthWeight,
    PublishedVersionError,
    Requirement,
    RuleGroup,
    RuleVersion,
    Tier,
    TierChange,
    TierRule,
)
from tiers.publishing import publish
from tiers.rendering import render_version
from tiers.rules import Need, TierSpec, all_of, build, copy_to_draft
from tiers.simulation import simulate

pytestmark = pytest.mark.django_db

EDITOR_PERMISSIONS = ["view_ruleversion", "change_ruleversion", "change_tier"]


def staff_client(username: str, codenames: list[str]) -> tuple[Client, User]:
    user = User.objects.create_user(
        username, f"{username}@example.com", "pw-12345-x", is_staff=True
    )
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    # English, so Django's own admin text is predictable in assertions.
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client, user


@pytest.fixture
def editor() -> tuple[Client, User]:
    """A rule editor: edits drafts, copies and simulates, cannot publish."""
    return staff_client("editor", EDITOR_PERMISSIONS)


@pytest.fixture
def publisher() -> tuple[Client, User]:
    """A rule editor who may also publish."""
    return staff_client("publisher", [*EDITOR_PERMISSIONS, "publish_ruleversion"])


@pytest.fixture
def viewer() -> tuple[Client, User]:
    """Staff who may look at rule versions and nothing more."""
    return staff_client("viewer", ["view_ruleversion"])


@pytest.fixture
def current(ladder) -> RuleVersion:
    """The standard rules, published as version 1."""
    return RuleVersion.objects.get(number=1)


@pytest.fixture
def draft(current) -> RuleVersion:
    return copy_to_draft(current)


def url(name: str, version: RuleVersion) -> str:
    return reverse(f"admin:tiers_ruleversion_{name}", args=[version.pk])


def form_values(form) -> dict[str, str]:
    """Return the POST data a browser sends for ``form`` as rendered."""
    data = {}
    for name in form.fields:
        value = form[name].value()
        if value is None or value is False:
            continue
        data[form.add_prefix(name)] = "on" if value is True else str(value)
    return data


def change_form_data(response) -> dict[str, str]:
    """Return the POST data of an admin change page: the form and every inline."""
    data = form_values(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        data.update(form_values(inline.formset.management_form))
        for form in inline.formset.forms:
            data.update(form_values(form))
    return data


def inline_index(data: dict[str, str], prefix: str, pk: int) -> int:
    index = 0
    while f"{prefix}-{index}-id" in data:
        if data[f"{prefix}-{index}-id"] == str(pk):
            return index
        index += 1
    raise AssertionError(f"{prefix} row with id={pk} is not on the page")


def silver_spend(version: RuleVersion) -> Requirement:
    rule = TierRule.objects.get(version=version, tier__name="Silver")
    return Requirement.objects.get(group=rule.entry)


def gold_spend(version: RuleVersion) -> Requirement:
    rule = TierRule.objects.get(version=version, tier__name="Gold")
    return Requirement.objects.get(group=rule.entry, metric="net_spend")


# Editing a draft on its change page


def test_draft_inline_edit_saves_threshold(editor, draft):
    client, _ = editor
    requirement = silver_spend(draft)
    page = client.get(url("change", draft))
    data = change_form_data(page)
    index = inline_index(data, "requirements", requirement.pk)
    data[f"requirements-{index}-threshold"] = "1500"

    response = client.post(url("change", draft), data)

    assert response.status_code == 302
    requirement.refresh_from_db()
    assert requirement.threshold == Decimal("1500")


def test_draft_inline_adds_requirement(editor, draft):
    client, _ = editor
    gold_entry = TierRule.objects.get(version=draft, tier__name="Gold").entry
    page = client.get(url("change", draft))
    data = change_form_data(page)
    new = int(data["requirements-TOTAL_FORMS"])
    data["requirements-TOTAL_FORMS"] = str(new + 1)
    data.update(
        {
            f"requirements-{new}-group": str(gold_entry.pk),
            f"requirements-{new}-metric": "visits",
            f"requirements-{new}-window": "rolling_days",
            f"requirements-{new}-window_days": "90",
            f"requirements-{new}-threshold": "3",
            f"requirements-{new}-position": "5",
        }
    )

    response = client.post(url("change", draft), data)

    assert response.status_code == 302
    added = Requirement.objects.get(group=gold_entry, metric="visits")
    assert added.version_id == draft.pk
    assert added.window_days == 90


def test_group_choices_limited_to_version(editor, draft, current):
    client, _ = editor

    page = client.get(url("change", draft))

    for inline in page.context["inline_admin_formsets"]:
        for form in inline.formset.forms:
            for name in ("entry", "retention", "parent", "group"):
                if name in form.fields:
                    versions = {g.version_id for g in form.fields[name].queryset}
                    assert versions == {draft.pk}


def test_group_loop_is_rejected(editor, draft):
    client, _ = editor
    outer = TierRule.objects.get(version=draft, tier__name="Gold").entry
    inner = RuleGroup.objects.create(version=draft, parent=outer, label="inner")
    page = client.get(url("change", draft))
    data = change_form_data(page)
    index = inline_index(data, "groups", outer.pk)
    data[f"groups-{index}-parent"] = str(inner.pk)

    response = client.post(url("change", draft), data)

    assert response.status_code == 200
    assert "cannot sit inside itself" in response.content.decode()
    outer.refresh_from_db()
    assert outer.parent_id is None


def test_rolling_window_needs_days_in_inline(editor, draft):
    client, _ = editor
    requirement = silver_spend(draft)
    data = change_form_data(client.get(url("change", draft)))
    index = inline_index(data, "requirements", requirement.pk)
    data[f"requirements-{index}-window_days"] = ""

    response = client.post(url("change", draft), data)

    assert response.status_code == 200
    assert "Enter the number of days" in response.content.decode()


def test_change_page_shows_rules_in_both_languages(editor, draft):
    client, _ = editor
    ladder = Ladder.load(draft)

    response = client.get(url("change", draft))

    content = response.content.decode()
    for language in ("zh-hans", "en"):
        for tier, entry, _retention in render_version(ladder, language):
            assert tier in content
            assert entry in content


def test_change_page_colours_problems(editor, tiers):
    client, _ = editor
    spec = standard_spec(tiers)
    spec.tiers[2] = TierSpec(
        tiers["gold"], all_of(Need("net_spend", 800), Need("orders", 1500))
    )
    draft = build(spec)

    response = client.get(url("change", draft))

    content = response.content.decode()
    assert 'class="blocking"' in content
    assert "Gold is easier to reach than Silver" in content
    assert 'class="warning"' in content
    assert "looks like an amount typed into a count" in content


# Published versions are frozen


def test_published_change_page_is_read_only(editor, current):
    client, _ = editor

    response = client.get(url("change", current))

    assert response.status_code == 200
    content = response.content.decode()
    assert "is published, so its rules are frozen" in content
    assert 'name="requirements-0-threshold"' not in content
    assert 'name="_save"' not in content
    assert "Copy to new draft" in content


def test_published_version_post_rejected(editor, current, draft):
    client, _ = editor
    # A valid draft form, pointed at the published version.
    data = change_form_data(client.get(url("change", draft)))
    requirement = silver_spend(current)

    response = client.post(url("change", current), data)

    assert response.status_code == 403
    requirement.refresh_from_db()
    assert requirement.threshold == Decimal("1000")


def test_published_version_cannot_be_deleted(editor, current):
    client, _ = editor

    response = client.post(url("delete", current), {"post": "yes"})

    assert response.status_code == 403
    assert RuleVersion.objects.filter(pk=current.pk).exists()


def test_published_requirement_save_raises(current):
    requirement = silver_spend(current)
    requirement.threshold = Decimal("1")

    with pytest.raises(PublishedVersionError):
        requirement.save()


def test_version_revert_rejected(publisher, current):
    client, _ = publisher
    first = current.history.order_by("history_id").first()

    response = client.post(
        reverse(
            "admin:tiers_ruleversion_simple_history",
            args=[current.pk, first.history_id],
        ),
        {"note": "reverted"},
    )

    assert response.status_code == 403
    current.refresh_from_db()
    assert current.status == RuleVersion.Status.PUBLISHED


# Copy to a new draft


def test_copy_creates_identical_draft(editor, current):
    client, user = editor

    response = client.post(url("copy", current))

    copy = RuleVersion.objects.get(number=2)
    assert response.status_code == 302
    assert response["Location"] == url("change", copy)
    assert copy.is_draft
    assert copy.based_on == current
    assert copy.created_by == user
    for language in ("zh-hans", "en"):
        copied = render_version(Ladder.load(copy), language)
        original = render_version(Ladder.load(current), language)
        assert copied == original
    for model in (TierRule, RuleGroup, Requirement, GrowthWeight):
        copied_count = model.objects.filter(version=copy).count()
        assert copied_count == model.objects.filter(version=current).count()


def test_copy_needs_post(editor, current):
    client, _ = editor

    response = client.get(url("copy", current))

    assert response.status_code == 405
    assert RuleVersion.objects.count() == 1


def test_copy_needs_change_permission(viewer, current):
    client, _ = viewer

    response = client.post(url("copy", current))

    assert response.status_code == 403
    assert RuleVersion.objects.count() == 1


# Simulation


@pytest.fixture
def six_members(current, store) -> dict[str, Member]:
    """Six members placed under version 1, except "newcomer" who has no tier.

    The draft below needs 2,000 for Silver (was 1,000) and 4,000 for Gold
    (was 5,000, still with 6 orders), which moves three of them.
    """
    now = timezone.now()
    members = {}
    purchases = {
        "falls": ["1500"],  # Silver -> Bronze
        "stays_silver": ["2500"],  # Silver -> Silver
        "rises": ["750"] * 6,  # 4,500 in 6 orders: Silver -> Gold
        "stays_bronze": ["500"],  # Bronze -> Bronze
        "stays_gold": ["800"] * 6 + ["1200"],  # 6,000 in 7 orders: Gold
    }
    for name, amounts in purchases.items():
        member = make_member(store, name, name=name)
        for days_ago, amount in enumerate(amounts, start=1):
            record(member, store, "purchase", now - dt.timedelta(days=days_ago), amount)
        members[name] = member
    evaluate()
    members["newcomer"] = make_member(store, "newcomer", name="newcomer")
    return members


@pytest.fixture
def stricter_draft(current) -> RuleVersion:
    draft = copy_to_draft(current)
    spend = silver_spend(draft)
    spend.threshold = Decimal("2000")
    spend.save()
    gold = gold_spend(draft)
    gold.threshold = Decimal("4000")
    gold.save()
    return draft


def test_simulate_page_counts_movements(editor, six_members, stricter_draft):
    client, _ = editor

    response = client.get(url("simulate", stricter_draft))

    assert response.status_code == 200
    matrix = response.context["matrix"]
    assert matrix["targets"] == ["Bronze", "Silver", "Gold", "Platinum"]
    rows = {row["source"]: row for row in matrix["rows"]}
    assert [count for count, _ in rows[None]["cells"]] == [1, 0, 0, 0]
    assert [count for count, _ in rows["Bronze"]["cells"]] == [1, 0, 0, 0]
    assert [count for count, _ in rows["Silver"]["cells"]] == [1, 1, 1, 0]
    assert [count for count, _ in rows["Gold"]["cells"]] == [0, 0, 1, 0]
    assert rows["Silver"]["up"] == 1
    assert rows["Silver"]["down"] == 1
    assert matrix["column_totals"] == [3, 1, 2, 0]
    assert matrix["total"] == 6
    totals = response.context["totals"]
    assert totals == {
        "evaluated": 6,
        "moved": 3,
        "up": 1,
        "down": 1,
        "new": 1,
        "unchanged": 3,
    }
    # A rule editor is shown members' names masked.
    movers = {row["name"]: row for row in response.context["movers"]}
    assert set(movers) == {"f***", "r***", "n***"}
    assert movers["r***"]["to_tier"] == "Gold"
    assert "¥4,500" in movers["r***"]["values"]


def test_movers_export_opens_in_openpyxl(editor, six_members, stricter_draft):
    client, _ = editor

    response = client.get(url("movers_export", stricter_draft))

    assert response.status_code == 200
    assert response["Content-Type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert "rule-version-2-movers.xlsx" in response["Content-Disposition"]
    workbook = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)
    rows = list(workbook["Movers"].iter_rows(values_only=True))
    header, body = rows[0], rows[1:]
    assert header[:5] == ("Member ID", "Member", "From", "To", "Direction")
    moves = {row[1]: (row[2], row[3], row[4]) for row in body}
    assert moves == {
        "f***": ("Silver", "Bronze", "down"),
        "r***": ("Silver", "Gold", "up"),
        "n***": (None, "Bronze", "new"),
    }
    assert AuditEvent.objects.filter(action=AuditAction.EXPORT, count=3).exists()


def test_simulate_needs_change_permission(viewer, draft):
    client, _ = viewer

    response = client.get(url("simulate", draft))

    assert response.status_code == 403


def test_simulation_matches_publish(publisher, six_members, stricter_draft, current):
    client, _ = publisher
    result = simulate(stricter_draft)
    expected = {member.pk: member.tier for member in Member.objects.all()}
    expected = {pk: tier.name if tier else None for pk, tier in expected.items()}
    for mover in result.movers:
        expected[mover.member_id] = mover.to_tier

    response = client.post(
        url("publish", stricter_draft),
        {"reason": "Stricter Silver", "policy": "reevaluate", "starts": "now"},
    )
    assert response.status_code == 302
    assert OrmQ.objects.count() == 0  # queued only after commit
    reevaluate_everyone(stricter_draft.pk)

    actual = {pk: name for pk, name in Member.objects.values_list("pk", "tier__name")}
    assert actual == expected
    changes = TierChange.objects.filter(version=stricter_draft).count()
    assert changes == result.moved


def test_publish_queues_reevaluation(
    publisher, stricter_draft, django_capture_on_commit_callbacks
):
    client, _ = publisher

    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            url("publish", stricter_draft),
            {"reason": "Stricter Silver", "policy": "reevaluate", "starts": "now"},
        )

    assert OrmQ.objects.count() == 1


# Fairness report, rendered without knowing its fields


@dataclass
class FakeRow:
    member: str
    current: str
    draft: str


@dataclass
class FakeThresholds:
    net_spend: str


@dataclass
class FakeReport:
    thresholds: FakeThresholds
    draft_counts: dict[str, int]
    members: list[FakeRow]


def test_fairness_page_renders_any_dataclass(editor, draft, monkeypatch):
    client, _ = editor
    module = types.ModuleType("tiers.fairness")
    rows = [FakeRow(f"m{i}", "Silver", "Gold") for i in range(205)]
    report = FakeReport(FakeThresholds("4,000"), {"Platinum": 7}, rows)
    module.fairness_report = lambda version: report
    monkeypatch.setitem(sys.modules, "tiers.fairness", module)
    monkeypatch.setattr(tiers_admin, "has_fairness_report", lambda: True)

    response = client.get(url("fairness", draft))

    assert response.status_code == 200
    content = response.content.decode()
    assert "Thresholds" in content
    assert '<th scope="row">Net spend</th><td>4,000</td>' in content
    assert '<th scope="row">Platinum</th><td>7</td>' in content
    assert "Members (205)" in content
    assert "The first 200 of 205 rows." in content
    assert "m199" in content
    assert "m200" not in content


def test_fairness_page_with_report_module(editor, six_members, stricter_draft):
    client, _ = editor

    response = client.get(url("fairness", stricter_draft))

    assert response.status_code == 200
    assert "Draft counts" in response.content.decode()


# Publishing through the form


@pytest.mark.parametrize("policy", [choice.value for choice in RuleVersion.Policy])
def test_publish_with_each_policy(publisher, stricter_draft, policy):
    client, user = publisher

    response = client.post(
        url("publish", stricter_draft),
        {"reason": f"Try {policy}", "policy": policy, "starts": "now"},
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:tiers_ruleversion_changelist")
    stricter_draft.refresh_from_db()
    assert stricter_draft.status == RuleVersion.Status.PUBLISHED
    assert stricter_draft.policy == policy
    assert stricter_draft.publish_reason == f"Try {policy}"
    assert stricter_draft.published_by == user
    assert abs(stricter_draft.effective_from - timezone.now()) < dt.timedelta(minutes=1)


def test_publish_later_reads_program_time_zone(publisher, stricter_draft):
    client, _ = publisher
    moment = timezone.now().astimezone(SHANGHAI) + dt.timedelta(days=10)
    typed = moment.strftime("%Y-%m-%dT%H:%M")

    client.post(
        url("publish", stricter_draft),
        {
            "reason": "Next month",
            "policy": "grandfather",
            "starts": "later",
            "effective_at": typed,
        },
    )

    stricter_draft.refresh_from_db()
    expected = moment.replace(second=0, microsecond=0)
    assert stricter_draft.effective_from == expected


def test_publish_later_needs_a_date(publisher, stricter_draft):
    client, _ = publisher

    response = client.post(
        url("publish", stricter_draft),
        {"reason": "Soon", "policy": "reevaluate", "starts": "later"},
    )

    assert response.status_code == 200
    assert "Enter the date and time it takes effect." in response.content.decode()
    stricter_draft.refresh_from_db()
    assert stricter_draft.is_draft


def test_publish_past_date_shows_service_message(publisher, stricter_draft):
    client, _ = publisher

    response = client.post(
        url("publish", stricter_draft),
        {
            "reason": "Backdated",
            "policy": "reevaluate",
            "starts": "later",
            "effective_at": "2020-01-01T00:00",
        },
    )

    assert response.status_code == 200
    assert "The effective date is in the past" in response.content.decode()
    stricter_draft.refresh_from_db()
    assert stricter_draft.is_draft


def test_publish_needs_reason_and_policy(publisher, stricter_draft):
    client, _ = publisher

    response = client.post(url("publish", stricter_draft), {"starts": "now"})

    assert response.status_code == 200
    assert response.context["form"].errors.keys() == {"reason", "policy"}
    stricter_draft.refresh_from_db()
    assert stricter_draft.is_draft


def test_publish_blocking_problem_rejected(publisher, tiers):
    client, _ = publisher
    spec = standard_spec(tiers)
    spec.tiers[2] = TierSpec(
        tiers["gold"], all_of(Need("net_spend", 800), Need("orders", 6))
    )
    draft = build(spec)

    response = client.post(
        url("publish", draft),
        {"reason": "Cheaper Gold", "policy": "reevaluate", "starts": "now"},
    )

    assert response.status_code == 200
    content = response.content.decode()
    assert "The version was not published" in content
    assert "Gold is easier to reach than Silver" in content
    draft.refresh_from_db()
    assert draft.is_draft


def test_publish_needs_publish_permission(editor, stricter_draft):
    client, _ = editor

    page = client.get(url("change", stricter_draft))
    response = client.post(
        url("publish", stricter_draft),
        {"reason": "Sneaky", "policy": "reevaluate", "starts": "now"},
    )

    assert url("publish", stricter_draft) not in page.content.decode()
    assert response.status_code == 403
    stricter_draft.refresh_from_db()
    assert stricter_draft.is_draft


def test_publish_page_of_published_version_redirects(publisher, current):
    client, _ = publisher

    response = client.get(url("publish", current), follow=True)

    assert response.redirect_chain[-1][0] == url("change", current)
    assert "is already published" in response.content.decode()


# Audit rows


def test_tier_edit_is_audited(editor, tiers):
    client, user = editor
    gold = tiers["gold"]

    response = client.post(
        reverse("admin:tiers_tier_change", args=[gold.pk]),
        {"name": "Gold", "rank": "20", "colour": "#d4af37", "description": ""},
    )

    assert response.status_code == 302
    record = Tier.history.filter(id=gold.pk).latest("history_date")
    assert record.history_type == "~"
    assert record.colour == "#d4af37"
    assert record.history_user == user


def test_requirement_edit_is_audited(editor, draft):
    client, user = editor
    requirement = silver_spend(draft)
    data = change_form_data(client.get(url("change", draft)))
    index = inline_index(data, "requirements", requirement.pk)
    data[f"requirements-{index}-threshold"] = "1500"
    client.post(url("change", draft), data)

    record = Requirement.history.filter(id=requirement.pk).latest("history_date")
    page = client.get(url("rules_history", draft))

    assert record.threshold == Decimal("1500")
    assert record.history_user == user
    content = page.content.decode()
    assert "Threshold: 1000.00 → 1500.00" in content
    assert "editor" in content


def test_publish_is_audited(publisher, stricter_draft):
    client, user = publisher

    client.post(
        url("publish", stricter_draft),
        {"reason": "Stricter Silver", "policy": "reevaluate", "starts": "now"},
    )

    record = stricter_draft.history.latest("history_date")
    page = client.get(url("rules_history", stricter_draft))

    assert record.status == RuleVersion.Status.PUBLISHED
    assert record.history_user == user
    assert record.history_change_reason == "Published: Stricter Silver"
    content = page.content.decode()
    assert "Published: Stricter Silver" in content
    assert "Status: Draft → Published" in content
    assert "Publish policy: — → Re-evaluate every member now" in content
    assert "Published by: — → publisher" in content


def test_deleted_requirement_in_rules_history(editor, draft):
    client, _ = editor
    requirement = silver_spend(draft)
    data = change_form_data(client.get(url("change", draft)))
    index = inline_index(data, "requirements", requirement.pk)
    data[f"requirements-{index}-DELETE"] = "on"
    client.post(url("change", draft), data)

    page = client.get(url("rules_history", draft))

    assert not Requirement.objects.filter(pk=requirement.pk).exists()
    content = page.content.decode()
    assert "Requirement: Silver entry: net spend ≥ 1000.00" in content
    assert "deleted" in content


def test_history_pages_name_the_user(publisher, stricter_draft, tiers):
    client, _ = publisher
    client.post(
        url("publish", stricter_draft),
        {"reason": "Stricter Silver", "policy": "reevaluate", "starts": "now"},
    )
    client.post(
        reverse("admin:tiers_tier_change", args=[tiers["gold"].pk]),
        {"name": "Gold", "rank": "20", "colour": "#d4af37", "description": ""},
    )

    version_page = client.get(url("history", stricter_draft))
    tier_page = client.get(reverse("admin:tiers_tier_history", args=[tiers["gold"].pk]))

    assert version_page.status_code == 200
    assert "publisher" in version_page.content.decode()
    assert tier_page.status_code == 200
    assert "publisher" in tier_page.content.decode()


# List pages keep a fixed number of queries


def make_versions(tiers, user: User, count: int) -> None:
    """Publish ``count`` versions, a day apart, then add one draft."""
    for day in range(count):
        publish(
            build(standard_spec(tiers)),
            user=user,
            reason="query count",
            policy=RuleVersion.Policy.REEVALUATE,
            effective_from=LONG_AGO + dt.timedelta(days=day),
            allow_past=True,
        )
    build(standard_spec(tiers))


@pytest.mark.parametrize("count", [3, 30])
def test_version_changelist_query_count(
    publisher, tiers, count, django_assert_num_queries
):
    client, user = publisher
    make_versions(tiers, user, count)

    # session, user, user and group permissions, the paginator's count, and
    # the rows with published_by joined and the in-effect EXISTS subquery
    # inline.
    with django_assert_num_queries(6):
        response = client.get(reverse("admin:tiers_ruleversion_changelist"))

    assert len(response.context["cl"].result_list) == count + 1
    assert sum(1 for row in response.context["cl"].result_list if row.is_draft) == 1


def test_version_changelist_marks_version_in_effect(publisher, tiers):
    client, user = publisher
    make_versions(tiers, user, 3)

    response = client.get(reverse("admin:tiers_ruleversion_changelist"))

    admin_page = response.context["cl"].model_admin
    in_effect = [
        version.number
        for version in response.context["cl"].result_list
        if admin_page.in_effect(version)
    ]
    assert in_effect == [3]


@pytest.mark.parametrize("count", [3, 30])
def test_tier_change_changelist_query_count(
    publisher, ladder, store, count, django_assert_num_queries
):
    client, user = publisher
    user.user_permissions.add(Permission.objects.get(codename="view_tierchange"))
    for number in range(count):
        make_member(store, f"H{number}")
    evaluate()
    assert TierChange.objects.count() == count

    # session, user, user and group permissions, the tier filter's choices,
    # the paginator's count, the rows with member, both tiers and version
    # joined, and two for the date hierarchy (date range, distinct days).
    # The full count is switched off.
    with django_assert_num_queries(9):
        response = client.get(reverse("admin:tiers_tierchange_changelist"))

    assert response.status_code == 200
