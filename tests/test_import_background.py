"""Large imports in the background: upload, check, confirm, import, progress.

The django-q2 tasks are called as functions, as a worker would call them;
the tests also check what was queued. Personas: ``importer`` is staff with
members.import, ``viewer`` is staff without it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ
from playwright.sync_api import expect

from members.importing.background import (
    APPLY_TASK,
    CHECK_TASK,
    apply_batch,
    check_batch,
    read_progress,
    task_timeout,
    write_progress,
)
from members.importing.service import import_file
from members.models import Activity, ImportBatch, ImportIssue
from tests.conftest import CASES

BAD_AMOUNT = CASES / "c17_transactions_bad_amount_row.csv"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "pw-for-the-browser-test"


@pytest.fixture(autouse=True)
def media(settings, tmp_path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def base(db) -> None:
    report = import_file(CASES / "base_members.csv", "members")
    assert report.created == 4


def staff_user(username: str, *permissions: str) -> User:
    user = User.objects.create_user(username, password="x", is_staff=True)
    for code in permissions:
        user.user_permissions.add(
            Permission.objects.get(codename=code, content_type__app_label="members")
        )
    return user


@pytest.fixture
def importer(db) -> User:
    return staff_user("importer", "import", "view_importbatch")


@pytest.fixture
def english_client(db):
    """A test client whose requests ask for English pages."""
    return Client(HTTP_ACCEPT_LANGUAGE="en")


@pytest.fixture
def importer_client(english_client, importer):
    english_client.force_login(importer)
    return english_client


def upload(client, path=BAD_AMOUNT, kind="activities", **fields):
    data = {
        "kind": kind,
        "file": SimpleUploadedFile(path.name, path.read_bytes()),
        "encoding": "",
        "date_order": "",
        "decimal_mark": "",
        **fields,
    }
    return client.post(reverse("members:large-import"), data)


def queued_tasks() -> list[dict]:
    return [task.task for task in OrmQ.objects.order_by("pk")]


def uploaded_batch(client, django_capture_on_commit_callbacks, **kwargs):
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(client, **kwargs)
    batch = ImportBatch.objects.latest("pk")
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "members:large-import-status", args=[batch.pk]
    )
    return batch


def progress_json(client, batch: ImportBatch) -> dict:
    response = client.get(reverse("members:large-import-progress", args=[batch.pk]))
    assert response.status_code == 200
    return response.json()


# Upload


def test_upload_page_shows_form(importer_client):
    response = importer_client.get(reverse("members:large-import"))

    assert response.status_code == 200
    content = response.content.decode()
    assert 'name="file"' in content
    assert "Upload and check" in content


def test_upload_stores_file_and_queues_check(
    base, importer_client, importer, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)

    assert batch.status == ImportBatch.Status.QUEUED
    assert batch.kind == "activities"
    assert batch.file_name == BAD_AMOUNT.name
    assert batch.file_size == BAD_AMOUNT.stat().st_size
    assert len(batch.file_sha256) == 64
    assert batch.created_by == importer
    assert batch.upload.read() == BAD_AMOUNT.read_bytes()
    (task,) = queued_tasks()
    assert task["func"] == CHECK_TASK
    assert task["args"] == (batch.pk,)
    assert task["timeout"] == task_timeout()
    assert task_timeout() > 600
    assert progress_json(importer_client, batch)["phase"] == "queued"


def test_upload_keeps_choices(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(
        importer_client,
        django_capture_on_commit_callbacks,
        date_order="day_first",
        decimal_mark="comma",
    )

    assert batch.options == {"date_order": "day_first", "decimal_mark": "comma"}


# Check


def test_check_stores_counts_and_saves_nothing(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)

    result = check_batch(batch.pk)

    batch.refresh_from_db()
    assert result == {"rows": 4}
    assert batch.status == ImportBatch.Status.CHECKED
    assert batch.total_rows == 4
    assert batch.created_count == 3
    assert batch.rejected_count == 1
    assert Activity.objects.count() == 0
    issue = ImportIssue.objects.get(batch=batch)
    assert issue.line == 4
    assert issue.column == "amount"
    assert issue.value == "12.5O"
    data = progress_json(importer_client, batch)
    assert data["status"] == "checked"
    assert data["working"] is False


def test_status_page_after_check(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)
    check_batch(batch.pk)

    response = importer_client.get(
        reverse("members:large-import-status", args=[batch.pk])
    )

    content = response.content.decode()
    assert response.status_code == 200
    assert "Result of the check (nothing saved yet)" in content
    assert "12.5O" in content
    assert reverse("admin:members_importbatch_issues", args=[batch.pk]) in content
    assert reverse("members:large-import-confirm", args=[batch.pk]) in content


def test_check_delivered_twice_runs_once(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)
    check_batch(batch.pk)

    second = check_batch(batch.pk)

    assert second == {"skipped": 1}
    assert ImportIssue.objects.filter(batch=batch).count() == 1
    batch.refresh_from_db()
    assert batch.created_count == 3


def test_refused_file_shows_reason(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(
        importer_client,
        django_capture_on_commit_callbacks,
        path=CASES / "c10b_transactions_dates_ambiguous.csv",
    )

    check_batch(batch.pk)

    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.REFUSED
    assert "ambiguous" in batch.message
    assert not batch.upload
    response = importer_client.get(
        reverse("members:large-import-status", args=[batch.pk])
    )
    content = response.content.decode()
    assert "ambiguous" in content
    assert "Nothing from this file was saved." in content
    assert reverse("members:large-import-confirm", args=[batch.pk]) not in content


def test_missing_stored_file_fails_check(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)
    batch.upload.storage.delete(batch.upload.name)

    result = check_batch(batch.pk)

    batch.refresh_from_db()
    assert result == {"failed": 1}
    assert batch.status == ImportBatch.Status.FAILED
    assert "FileNotFoundError" in batch.message


# Confirm and import


def test_confirm_queues_import(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)
    check_batch(batch.pk)

    with django_capture_on_commit_callbacks(execute=True):
        response = importer_client.post(
            reverse("members:large-import-confirm", args=[batch.pk])
        )

    assert response.status_code == 302
    task = queued_tasks()[-1]
    assert task["func"] == APPLY_TASK
    assert task["args"] == (batch.pk,)
    assert task["timeout"] == task_timeout()
    data = progress_json(importer_client, batch)
    assert data["status"] == "checked"
    assert data["working"] is True
    assert data["phase"] == "queued"
    page = importer_client.get(reverse("members:large-import-status", args=[batch.pk]))
    confirm_url = reverse("members:large-import-confirm", args=[batch.pk])
    assert confirm_url not in page.content.decode()


def test_import_saves_rows_and_deletes_file(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)
    check_batch(batch.pk)
    stored = batch.upload.name

    result = apply_batch(batch.pk)

    batch.refresh_from_db()
    assert result == {"rows": 4, "created": 3}
    assert batch.status == ImportBatch.Status.APPLIED
    assert batch.created_count == 3
    assert batch.rejected_count == 1
    assert ImportIssue.objects.filter(batch=batch).count() == 1
    assert set(
        Activity.objects.filter(import_batch=batch).values_list("reference", flat=True)
    ) == {"CN-3001", "CN-3002", "CN-3004"}
    assert not batch.upload
    assert not batch.upload.storage.exists(stored)
    response = importer_client.get(
        reverse("members:large-import-status", args=[batch.pk])
    )
    assert "Result of the import" in response.content.decode()


def test_import_delivered_twice_runs_once(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)
    check_batch(batch.pk)
    apply_batch(batch.pk)

    second = apply_batch(batch.pk)

    assert second == {"skipped": 1}
    assert Activity.objects.filter(import_batch=batch).count() == 3


def test_import_before_check_does_nothing(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)

    assert apply_batch(batch.pk) == {"skipped": 1}
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.QUEUED


def test_confirm_unchecked_batch_shows_error(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)

    response = importer_client.post(
        reverse("members:large-import-confirm", args=[batch.pk]), follow=True
    )

    assert "cannot be confirmed" in response.content.decode()
    assert [task["func"] for task in queued_tasks()] == [CHECK_TASK]


def test_abandoned_import_taken_over(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)
    check_batch(batch.pk)
    long_ago = timezone.now() - dt.timedelta(seconds=task_timeout() + 120)
    ImportBatch.objects.filter(pk=batch.pk).update(
        status=ImportBatch.Status.RUNNING, started_at=long_ago
    )

    result = apply_batch(batch.pk)

    assert result == {"rows": 4, "created": 3}
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.APPLIED


def test_running_import_not_taken_over(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)
    check_batch(batch.pk)
    ImportBatch.objects.filter(pk=batch.pk).update(
        status=ImportBatch.Status.RUNNING, started_at=timezone.now()
    )

    assert apply_batch(batch.pk) == {"skipped": 1}
    assert Activity.objects.count() == 0


# Progress


def test_progress_json_reports_percent(base, importer_client):
    batch = ImportBatch.objects.create(
        kind="activities", status=ImportBatch.Status.RUNNING, file_name="big.csv"
    )
    write_progress(batch.pk, "importing", 250_000, 1_000_000)

    data = progress_json(importer_client, batch)

    assert data["status"] == "running"
    assert data["working"] is True
    assert data["phase"] == "importing"
    assert data["phase_label"] == "Checking and saving rows"
    assert data["done"] == 250_000
    assert data["total"] == 1_000_000
    assert data["percent"] == 25


def test_progress_written_by_task(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)

    check_batch(batch.pk)

    progress = read_progress(batch.pk)
    assert progress is not None
    assert progress["phase"] == "importing"
    assert progress["done"] == 4
    assert progress["total"] == 4


def test_status_page_polls_progress(base, importer_client):
    batch = ImportBatch.objects.create(
        kind="members", status=ImportBatch.Status.CHECKING, file_name="big.csv"
    )
    write_progress(batch.pk, "scanning", 40_000, None)

    response = importer_client.get(
        reverse("members:large-import-status", args=[batch.pk])
    )

    content = response.content.decode()
    assert reverse("members:large-import-progress", args=[batch.pk]) in content
    assert "Reading the file" in content
    assert "<progress" in content


# Permissions


def test_anonymous_redirected_to_login(english_client):
    response = english_client.get(reverse("members:large-import"))

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_staff_without_permission_forbidden(english_client):
    client = english_client
    client.force_login(staff_user("viewer", "view_importbatch"))
    batch = ImportBatch.objects.create(kind="members", file_name="f.csv")

    urls = [
        reverse("members:large-import"),
        reverse("members:large-import-status", args=[batch.pk]),
        reverse("members:large-import-progress", args=[batch.pk]),
    ]
    for url in urls:
        assert client.get(url).status_code == 403, url
    confirm = reverse("members:large-import-confirm", args=[batch.pk])
    assert client.post(confirm).status_code == 403


def test_confirm_needs_post(importer_client, db):
    batch = ImportBatch.objects.create(kind="members", file_name="f.csv")

    response = importer_client.get(
        reverse("members:large-import-confirm", args=[batch.pk])
    )

    assert response.status_code == 405


def test_upload_above_streaming_limit_rejected(importer_client, settings, db):
    settings.CRM_IMPORT_STREAMING_MAX_BYTES = 10

    response = upload(importer_client)

    assert response.status_code == 200
    assert "more than the 0 MB limit" in response.content.decode()
    assert not ImportBatch.objects.exists()


def test_missing_stored_file_fails_import(
    base, importer_client, django_capture_on_commit_callbacks
):
    batch = uploaded_batch(importer_client, django_capture_on_commit_callbacks)
    check_batch(batch.pk)
    batch.refresh_from_db()
    batch.upload.storage.delete(batch.upload.name)

    result = apply_batch(batch.pk)

    batch.refresh_from_db()
    assert result == {"failed": 1}
    assert batch.status == ImportBatch.Status.FAILED
    assert "FileNotFoundError" in batch.message
    assert Activity.objects.count() == 0


# Progress bar in a browser


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_progress_bar_follows_task(live_server, chromium):
    user = staff_user("bulk", "import", "view_importbatch")
    user.set_password(PASSWORD)
    user.save()
    batch = ImportBatch.objects.create(
        kind="activities", status=ImportBatch.Status.RUNNING, file_name="big.csv"
    )
    write_progress(batch.pk, "importing", 250_000, 1_000_000)
    status_url = reverse("members:large-import-status", args=[batch.pk])
    page = chromium.new_context(locale="en-US").new_page()

    page.goto(f"{live_server.url}{reverse('admin:login')}?next={status_url}")
    page.get_by_label("Username").fill("bulk")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    bar = page.locator("#large-import-progress progress")
    expect(bar).to_have_attribute("value", "25")
    write_progress(batch.pk, "importing", 750_000, 1_000_000)
    expect(bar).to_have_attribute("value", "75", timeout=10_000)
    expect(page.locator("#large-import-count")).to_have_text("750,000 / 1,000,000")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "large_import_progress.png", full_page=True)

    ImportBatch.objects.filter(pk=batch.pk).update(
        status=ImportBatch.Status.APPLIED, total_rows=3, created_count=3
    )

    expect(page.locator("h2", has_text="Result of the import")).to_be_visible(
        timeout=10_000
    )
    expect(page.locator("#large-import-progress")).to_be_hidden()
