"""Rolling back an import batch: the service, the admin pages and the button.

Personas: the importer may import (members.import) and nothing else; the
viewer may only view members. The base members M0001–M0004 come from
base_members.csv, in their own batch.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection, connections, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation
from playwright.sync_api import expect

from benefits.issuing import issue_for_tier_changes
from benefits.models import Benefit, Grant
from members.importing.batches import (
    RollbackError,
    evaluate_and_record,
    rollback_batch,
)
from members.importing.openings import import_openings
from members.importing.service import import_file
from members.models import (
    Activity,
    Channel,
    ChannelIdentity,
    ImportBatch,
    ImportedMember,
    ImportKind,
    Member,
)
from tests.conftest import CASES, record, standard_spec
from tiers.evaluation import evaluate
from tiers.ladder import Ladder
from tiers.models import RuleVersion, TierChange
from tiers.publishing import publish
from tiers.rules import build

BROWSER_PASSWORD = "pw-for-the-rollback-test"


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


@pytest.fixture
def base(db) -> ImportBatch:
    report = import_file(CASES / "base_members.csv", "members")
    return ImportBatch.objects.get(pk=report.batch_id)


def make_importer(username: str = "importer") -> User:
    user = User.objects.create_user(
        username, f"{username}@example.com", "pw", is_staff=True
    )
    user.user_permissions.add(Permission.objects.get(codename="import"))
    return user


@pytest.fixture
def importer(db) -> User:
    return make_importer()


@pytest.fixture
def importer_client(importer) -> Client:
    client = Client(headers={"accept-language": "en"})
    client.force_login(importer)
    return client


def member(external_id: str) -> Member:
    return Member.objects.get(identities__external_id=external_id)


def purchases(*rows: tuple[str, str, str]) -> bytes:
    """Return an activities CSV of purchases made yesterday in store-xuhui.

    Each row is (external_id, amount, reference).
    """
    when = (timezone.localtime() - dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    lines = ["external_id,occurred_at,amount,channel,kind,reference"]
    for external_id, amount, reference in rows:
        lines.append(f"{external_id},{when},{amount},store-xuhui,purchase,{reference}")
    return ("\n".join(lines) + "\n").encode()


def import_batch(data: bytes, kind: str, user=None) -> ImportBatch:
    report = import_file(data, kind, file_name=f"{kind}.csv", user=user)
    assert report.refused is None
    return ImportBatch.objects.get(pk=report.batch_id)


# Activity batches


def test_activity_rollback_deletes_activities_and_demotes(base, ladder, importer):
    batch = import_batch(
        purchases(("M0001", "1200.00", "P-1"), ("M0002", "50.00", "P-2")),
        "activities",
    )
    assert member("M0001").tier.name == "Silver"

    summary = rollback_batch(batch, importer)

    assert Activity.objects.filter(import_batch=batch).count() == 0
    assert member("M0001").tier.name == "Bronze"
    assert summary["activities_deleted"] == 2
    assert summary["tiers_evaluated"] is True
    assert summary["tiers_changed"] == 1
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.ROLLED_BACK
    assert batch.rolled_back_by == importer
    assert batch.rolled_back_at is not None
    assert batch.rollback_summary["activities_deleted"] == 2


def test_activity_rollback_keeps_other_activity(base, ladder, importer):
    lin = member("M0001")
    store = Channel.objects.get(code="store-xuhui")
    record(lin, store, "purchase", timezone.now(), "30", reference="KEEP-1")
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")

    rollback_batch(batch, importer)

    assert list(Activity.objects.values_list("reference", flat=True)) == ["KEEP-1"]


def test_rolled_back_file_imports_again(base, importer):
    data = purchases(("M0001", "20.00", "P-1"))
    batch = import_batch(data, "activities")
    rollback_batch(batch, importer)

    report = import_file(data, "activities", file_name="again.csv")

    assert report.created == 1
    assert report.already_imported == 0


def test_rollback_without_ladder_still_rolls_back(base, importer):
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")

    summary = rollback_batch(batch, importer)

    assert summary["tiers_evaluated"] is False
    assert Activity.objects.count() == 0


def test_second_rollback_changes_nothing(base, importer):
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")
    rollback_batch(batch, importer)
    batch.refresh_from_db()
    first_time = batch.rolled_back_at

    with pytest.raises(RollbackError, match="already rolled back"):
        rollback_batch(batch, make_importer("second"))

    batch.refresh_from_db()
    assert batch.rolled_back_at == first_time
    assert batch.rolled_back_by.username == "importer"


@pytest.mark.parametrize(
    "status", [ImportBatch.Status.REFUSED, ImportBatch.Status.FAILED]
)
def test_only_applied_batches_roll_back(base, importer, status):
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")
    ImportBatch.objects.filter(pk=batch.pk).update(status=status)

    with pytest.raises(RollbackError, match="only a finished import"):
        rollback_batch(batch, importer)

    assert Activity.objects.count() == 1


# Member batches


def test_member_rollback_deletes_created_members(base, ladder, importer):
    data = b"external_id,channel,name\nN-1,tmall,New One\nN-2,tmall,New Two\n"
    batch = import_batch(data, "members")
    assert TierChange.objects.filter(member__identities__external_id="N-1").exists()

    summary = rollback_batch(batch, importer)

    assert not Member.objects.filter(identities__external_id__in=["N-1", "N-2"])
    assert not ChannelIdentity.objects.filter(import_batch=batch).exists()
    assert summary["members_deleted"] == 2
    assert summary["members_kept"] == 0
    assert Member.objects.count() == 4


def test_member_rollback_restores_updated_values(base, importer):
    data = (
        b"external_id,channel,name,email,joined_at\n"
        b"M0001,store-xuhui,Lin X,lin@example.org,2024-01-02\n"
    )
    batch = import_batch(data, "members")

    summary = rollback_batch(batch, importer)

    lin = member("M0001")
    assert lin.name == "Lin Xiaoyu"
    assert lin.email == "lin.xiaoyu@example.com"
    assert lin.joined_on == dt.date(2023, 5, 1)
    assert summary["members_restored"] == 1
    assert summary["conflicts"] == 0


def test_member_rollback_leaves_values_changed_since(base, importer):
    data = b"external_id,channel,name,email\nM0001,store-xuhui,Lin X,lin@example.org\n"
    batch = import_batch(data, "members")
    Member.objects.filter(identities__external_id="M0001").update(name="Lin by staff")

    summary = rollback_batch(batch, importer)

    lin = member("M0001")
    assert lin.name == "Lin by staff"
    assert lin.email == "lin.xiaoyu@example.com"
    assert summary["conflicts"] == 1
    assert summary["conflicted_members"] == [lin.pk]


def test_member_rollback_keeps_member_with_activity(base, importer):
    batch = import_batch(b"external_id,channel\nN-1,tmall\n", "members")
    import_batch(purchases(("N-1", "20.00", "P-1")), "activities")

    summary = rollback_batch(batch, importer)

    assert Member.objects.filter(identities__external_id="N-1").exists()
    assert summary["members_kept"] == 1
    assert summary["members_deleted"] == 0


def test_member_rollback_keeps_member_with_grant(base, ladder, importer):
    newsletter = Benefit.objects.create(name="Bronze newsletter", kind="service")
    newsletter.tiers.add(ladder["bronze"])
    batch = import_batch(b"external_id,channel\nN-1,tmall\n", "members")
    issue_for_tier_changes()
    new = member("N-1")
    assert Grant.objects.filter(member=new).exists()

    summary = rollback_batch(batch, importer)

    assert Member.objects.filter(pk=new.pk).exists()
    assert summary["members_kept"] == 1
    assert summary["kept_members"] == [new.pk]


def test_member_rollback_keeps_member_with_other_identity(base, importer):
    batch = import_batch(b"external_id,channel\nN-1,tmall\n", "members")
    new = member("N-1")
    shop = Channel.objects.get(code="shopify")
    ChannelIdentity.objects.create(member=new, channel=shop, external_id="SH-9")

    summary = rollback_batch(batch, importer)

    assert Member.objects.filter(pk=new.pk).exists()
    assert summary["members_kept"] == 1
    assert ChannelIdentity.objects.filter(member=new).count() == 2


def test_rollback_removes_linked_identity(base, importer):
    Channel.objects.create(code="douyin", name="Douyin", match_phone=True)
    batch = import_batch(
        b"external_id,channel,phone\nDY-1,douyin,13800000001\n", "members"
    )
    lin = member("M0001")
    assert ChannelIdentity.objects.filter(member=lin).count() == 2

    summary = rollback_batch(batch, importer)

    assert Member.objects.filter(pk=lin.pk).exists()
    assert list(lin.identities.values_list("external_id", flat=True)) == ["M0001"]
    assert summary["identities_deleted"] == 1


def test_member_rollback_keeps_other_batches(base, importer):
    batch = import_batch(b"external_id,channel\nN-1,tmall\n", "members")

    rollback_batch(batch, importer)

    assert Member.objects.count() == 4
    assert ImportedMember.objects.filter(batch=base).count() == 4
    base.refresh_from_db()
    assert base.status == ImportBatch.Status.APPLIED


# The admin pages


def test_batch_page_has_rollback_link(base, importer_client):
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")

    response = importer_client.get(
        reverse("admin:members_importbatch_change", args=[batch.pk])
    )

    rollback_url = reverse("admin:members_importbatch_rollback", args=[batch.pk])
    assert rollback_url in response.content.decode()


def test_confirmation_page_counts_what_goes(base, importer_client):
    batch = import_batch(
        purchases(("M0001", "20.00", "P-1"), ("M0002", "5.00", "P-2")), "activities"
    )

    response = importer_client.get(
        reverse("admin:members_importbatch_rollback", args=[batch.pk])
    )

    content = response.content.decode()
    assert response.status_code == 200
    assert "2 activities will be deleted." in content
    assert "The tiers of 2 members will be evaluated again." in content
    assert "csrfmiddlewaretoken" in content
    assert Activity.objects.count() == 2


def test_member_confirmation_page_counts(base, importer_client):
    batch = import_batch(
        b"external_id,channel,name\nN-1,tmall,New\nM0001,store-xuhui,Lin X\n",
        "members",
    )

    response = importer_client.get(
        reverse("admin:members_importbatch_rollback", args=[batch.pk])
    )

    content = response.content.decode()
    assert "1 member created by this import will be deleted." in content
    assert "1 member updated by this import gets its previous values back" in content


def test_rollback_post_rolls_back(base, importer_client):
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")
    url = reverse("admin:members_importbatch_rollback", args=[batch.pk])

    response = importer_client.post(url, follow=True)

    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.ROLLED_BACK
    assert Activity.objects.count() == 0
    messages = [str(m) for m in response.context["messages"]]
    assert messages[0].startswith(f"Import #{batch.pk} was rolled back (")
    assert "activities deleted: 1" in messages[0]
    change_page = response.content.decode()
    assert url not in change_page


def test_rollback_post_twice_shows_error(base, importer_client):
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")
    url = reverse("admin:members_importbatch_rollback", args=[batch.pk])
    importer_client.post(url)

    response = importer_client.post(url, follow=True)

    # The first rollback's message is shown too, because it was not read.
    messages = [str(m) for m in response.context["messages"]]
    assert "already rolled back" in messages[-1]


def test_rollback_needs_csrf_token(base, importer):
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")
    client = Client(enforce_csrf_checks=True)
    client.force_login(importer)

    response = client.post(
        reverse("admin:members_importbatch_rollback", args=[batch.pk])
    )

    assert response.status_code == 403
    assert Activity.objects.count() == 1


def test_rollback_needs_import_permission(base):
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")
    viewer = User.objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_importbatch"))
    client = Client()
    client.force_login(viewer)
    url = reverse("admin:members_importbatch_rollback", args=[batch.pk])

    page = client.get(reverse("admin:members_importbatch_change", args=[batch.pk]))
    response = client.post(url)

    assert page.status_code == 200
    assert url not in page.content.decode()
    assert response.status_code == 403
    assert Activity.objects.count() == 1


# Two rollbacks at once


# serialized_rollback restores the activity kinds that a migration creates,
# because a transactional test flushes every table afterwards.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_rollbacks_run_once(importer):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite locks the whole database, so nothing runs concurrently.")
    import_file(CASES / "base_members.csv", "members")
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")
    results: list[str] = []
    start = threading.Barrier(2)

    def roll_back() -> None:
        try:
            start.wait()
            rollback_batch(ImportBatch.objects.get(pk=batch.pk), importer)
            results.append("rolled back")
        except RollbackError:
            results.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=roll_back) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == ["refused", "rolled back"]
    assert Activity.objects.count() == 0


# The button in a browser


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_rollback_button_in_browser(live_server, chromium):
    import_file(CASES / "base_members.csv", "members")
    importer = make_importer()
    importer.set_password(BROWSER_PASSWORD)
    importer.save()
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")
    page = chromium.new_context(locale="en-US").new_page()

    page.goto(f"{live_server.url}/admin/login/?next=/admin/members/importbatch/")
    page.get_by_label("Username").fill("importer")
    page.get_by_label("Password").fill(BROWSER_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="activities.csv").click()
    page.get_by_role("link", name="Roll back this import").click()

    expect(page.locator(".rollback-counts")).to_contain_text(
        "1 activity will be deleted."
    )
    page.get_by_role("button", name="Yes, roll back this import").click()

    expect(page.locator(".messagelist")).to_contain_text(
        f"Import #{batch.pk} was rolled back ("
    )
    expect(page.get_by_role("link", name="Roll back this import")).to_have_count(0)
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.ROLLED_BACK
    assert not Activity.objects.filter(reference="P-1").exists()


def test_opening_balance_rollback_from_admin(base, ladder, importer_client):
    data = (
        b"external_id,channel,growth_value,spend,as_of\n"
        b"M0001,store-xuhui,100,200,2024-01-01\n"
    )
    report = import_openings(data, file_name="openings.csv")
    batch = ImportBatch.objects.get(pk=report.batch_id)
    url = reverse("admin:members_importbatch_rollback", args=[batch.pk])

    page = importer_client.get(url)
    importer_client.post(url)

    assert "1 opening balance will be deleted." in page.content.decode()
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.ROLLED_BACK
    assert not Activity.objects.filter(import_batch=batch).exists()


# Tiers the import changed


def publish_new_activity_rules(tiers) -> None:
    """Publish the standard rules again, for new activity only, from now on."""
    publish(
        build(standard_spec(tiers)),
        user=None,
        reason="test set-up",
        policy=RuleVersion.Policy.NEW_ACTIVITY,
        effective_from=timezone.now() - dt.timedelta(minutes=1),
        allow_past=True,
    )


def test_rollback_restores_tier_under_new_activity_policy(base, ladder, importer):
    evaluate()
    publish_new_activity_rules(ladder)
    batch = import_batch(
        purchases(("M0001", "1200.00", "P-1"), ("M0002", "50.00", "P-2")),
        "activities",
    )
    assert member("M0001").tier == ladder["silver"]

    summary = rollback_batch(batch, importer)

    assert member("M0001").tier == ladder["bronze"]
    assert summary["tiers_restored"] == 1
    assert summary["tiers_changed"] == 1
    assert summary["conflicts"] == 0
    undone = TierChange.objects.get(
        member=member("M0001"), explanation__import__rolled_back=True
    )
    assert undone.reason == TierChange.Reason.DEMOTION
    assert undone.from_tier == ladder["silver"]


def test_import_records_tier_change_per_member(base, ladder):
    evaluate()
    bronze = ladder["bronze"].pk

    batch = import_batch(purchases(("M0001", "1200.00", "P-1")), "activities")

    row = ImportedMember.objects.get(batch=batch)
    assert row.member == member("M0001")
    assert row.created is False
    assert row.previous["tier"] == [bronze, ladder["silver"].pk]
    assert set(row.previous) == {"tier", "tier_since", "review_at", "grace_until"}


def test_member_import_merges_tier_into_row(base, ladder, importer):
    data = b"external_id,channel,name\nM0001,store-xuhui,Lin X\n"

    batch = import_batch(data, "members")

    previous = ImportedMember.objects.get(batch=batch).previous
    assert previous["name"] == ["Lin Xiaoyu", "Lin X"]
    assert previous["tier"] == [None, ladder["bronze"].pk]
    summary = rollback_batch(batch, importer)
    lin = member("M0001")
    assert lin.name == "Lin Xiaoyu"
    assert lin.tier == ladder["bronze"]
    assert summary["tiers_restored"] == 1
    assert not TierChange.objects.filter(
        member=lin, explanation__import__rolled_back=True
    ).exists()


def test_rollback_leaves_tier_changed_since(base, ladder, importer):
    evaluate()
    batch = import_batch(purchases(("M0001", "1200.00", "P-1")), "activities")
    lin = member("M0001")
    store = Channel.objects.get(code="store-xuhui")
    record(lin, store, "purchase", timezone.now(), "60000", reference="BIG-1")
    evaluate([lin.pk])
    assert member("M0001").tier == ladder["platinum"]

    summary = rollback_batch(batch, importer)

    assert member("M0001").tier == ladder["platinum"]
    assert summary["tiers_restored"] == 0
    assert summary["conflicts"] == 1
    assert summary["conflicted_members"] == [lin.pk]


def test_evaluation_queries_fixed_per_chunk(base, ladder):
    batch = ImportBatch.objects.create(
        kind=ImportKind.ACTIVITIES,
        status=ImportBatch.Status.RUNNING,
        file_name="tiers.csv",
    )
    ids = sorted(Member.objects.values_list("pk", flat=True))
    as_of = timezone.now()
    rules = Ladder.load(as_of=as_of)

    with CaptureQueriesContext(connection) as two:
        evaluate_and_record(batch, ids[:2], ladder=rules, as_of=as_of)
    ImportedMember.objects.filter(batch=batch).delete()
    TierChange.objects.all().delete()
    Member.objects.update(tier=None, tier_since=None, review_at=None)
    with CaptureQueriesContext(connection) as four:
        changed = evaluate_and_record(batch, ids, ladder=rules, as_of=as_of)

    assert changed == 4
    assert ImportedMember.objects.filter(batch=batch).count() == 4
    assert len(four) == len(two)


def test_confirmation_page_counts_tiers(base, ladder, importer_client):
    evaluate()
    batch = import_batch(purchases(("M0001", "1200.00", "P-1")), "activities")

    response = importer_client.get(
        reverse("admin:members_importbatch_rollback", args=[batch.pk])
    )

    content = response.content.decode()
    assert "1 member gets back the tier it had before the import" in content


def test_rollback_message_counts_restored_tiers(base, ladder, importer_client):
    evaluate()
    batch = import_batch(purchases(("M0001", "1200.00", "P-1")), "activities")
    url = reverse("admin:members_importbatch_rollback", args=[batch.pk])

    response = importer_client.post(url, follow=True)

    messages = [str(m) for m in response.context["messages"]]
    assert "tiers restored: 1" in messages[0]


# Batches that are not finished, and a busy database


def test_running_batch_is_not_rolled_back(base, importer_client):
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")
    ImportBatch.objects.filter(pk=batch.pk).update(status=ImportBatch.Status.RUNNING)
    url = reverse("admin:members_importbatch_rollback", args=[batch.pk])

    page = importer_client.get(url)
    response = importer_client.post(url, follow=True)

    assert "Yes, roll back this import" not in page.content.decode()
    messages = [str(m) for m in response.context["messages"]]
    assert messages == [
        f"Import #{batch.pk} is still running, so it was not rolled back. "
        "Wait until it has finished, then roll it back."
    ]
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.RUNNING
    assert Activity.objects.count() == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_rollback_while_database_busy(importer):
    if connection.vendor != "postgresql":
        pytest.skip("The lock timeout is set with a PostgreSQL setting.")
    import_file(CASES / "base_members.csv", "members")
    batch = import_batch(purchases(("M0001", "20.00", "P-1")), "activities")
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        # Another import's transaction, holding the batch row.
        try:
            with transaction.atomic():
                ImportBatch.objects.select_for_update().get(pk=batch.pk)
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait(30)
    client = Client(headers={"accept-language": "en"})
    client.force_login(importer)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
    try:
        response = client.post(
            reverse("admin:members_importbatch_rollback", args=[batch.pk]),
            follow=True,
        )
    finally:
        release.set()
        holder.join()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")

    messages = [str(m) for m in response.context["messages"]]
    assert response.status_code == 200
    assert "another import or job is writing to the database" in messages[0]
    assert "Try again in a minute." in messages[0]
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.APPLIED
    assert Activity.objects.count() == 1
