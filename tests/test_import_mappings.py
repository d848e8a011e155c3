"""Column mappings saved per channel: header matching, imports and the admin.

Personas: the importer may import (members.import); the mapping editor may
add and change column mappings.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import translation

from members.importing.columns import map_headers
from members.importing.errors import FileRejected
from members.importing.service import import_file
from members.models import (
    Activity,
    Channel,
    ChannelIdentity,
    ColumnMapping,
    ImportBatch,
    Member,
)
from tests.conftest import CASES

# A point-of-sale export whose headers match no built-in alias.
POS_MEMBERS = "VIP No.,Customer,Cell\nV-1,Wu Lei,13800003131\nV-2,Sun Li,13800003232\n"
POS_MAPPING = {"external_id": "VIP No.", "name": "Customer", "phone": "Cell"}


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


@pytest.fixture
def base(db) -> None:
    import_file(CASES / "base_members.csv", "members")


@pytest.fixture
def pos(db) -> Channel:
    return Channel.objects.create(code="pos-pudong", name="Pudong POS", kind="store")


@pytest.fixture
def importer(db) -> User:
    user = User.objects.create_user("importer", "i@example.com", "pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="import"),
        Permission.objects.get(codename="view_member"),
    )
    return user


@pytest.fixture
def importer_client(importer) -> Client:
    client = Client(headers={"accept-language": "en"})
    client.force_login(importer)
    return client


@pytest.fixture
def editor_client(db) -> Client:
    user = User.objects.create_user("editor", "e@example.com", "pw", is_staff=True)
    codenames = ["add_columnmapping", "change_columnmapping", "view_columnmapping"]
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client


# Header matching


def test_saved_mapping_maps_unknown_headers():
    columns = map_headers(["ＶＩＰ No.", "Customer", "channel"], "members", POS_MAPPING)

    assert columns.positions == {"external_id": 0, "name": 1, "channel": 2}


def test_saved_mapping_wins_over_alias():
    # "卡号" is a built-in alias of external_id, but this channel's files use
    # it for something else and keep the member number under "VIP No.".
    headers = ["卡号", "VIP No.", "channel"]

    columns = map_headers(headers, "members", {"external_id": "VIP No."})

    assert columns.positions["external_id"] == 1
    assert columns.ignored == ("卡号",)


def test_aliases_still_work_beside_mapping():
    columns = map_headers(["VIP No.", "姓名", "渠道"], "members", POS_MAPPING)

    assert columns.positions == {"external_id": 0, "name": 1, "channel": 2}


def test_optional_channel_not_required():
    columns = map_headers(["VIP No."], "members", POS_MAPPING, optional=["channel"])

    assert columns.positions == {"external_id": 0}


def test_missing_column_message_says_how_to_fix():
    with pytest.raises(FileRejected) as raised:
        map_headers(["VIP No.", "Customer"], "members")

    message = raised.value.message
    assert "Required columns external_id, channel not found" in message
    assert "Rename the header" in message
    assert "save a column mapping for the file's channel" in message
    assert "choose that channel on the import form" in message


# Imports with a channel


def test_channel_mapping_and_channel_applied(base, pos):
    ColumnMapping.objects.create(channel=pos, kind="members", columns=POS_MAPPING)

    report = import_file(
        POS_MEMBERS.encode(), "members", file_name="pos.csv", channel=pos
    )

    assert report.created == 2
    wu = Member.objects.get(identities__external_id="V-1")
    assert wu.name == "Wu Lei"
    assert wu.phone == "13800003131"
    assert wu.identities.get().channel == pos
    assert ImportBatch.objects.get(pk=report.batch_id).channel == pos


def test_file_channel_column_beats_chosen_channel(base, pos):
    data = b"external_id,channel\nX-1,tmall\n"

    import_file(data, "members", file_name="x.csv", channel=pos)

    identity = ChannelIdentity.objects.get(external_id="X-1")
    assert identity.channel.code == "tmall"


def test_chosen_channel_fills_short_rows(base, pos):
    data = (
        b"external_id,occurred_at,amount,kind,reference\n"
        b"M0001,2024-05-01,10,purchase,R-1\n"
        b"M0002,2024-05-01,20,purchase\n"
    )

    report = import_file(data, "activities", file_name="a.csv", channel=pos)

    assert report.created == 1
    assert Activity.objects.get(reference="R-1").channel == pos
    (issue,) = report.rejections
    assert (issue.line, issue.column) == (3, "reference")


def test_extra_values_still_rejected_with_channel(base, pos):
    data = b"external_id,name\nV-9,Ann,surplus\n"

    report = import_file(data, "members", file_name="x.csv", channel=pos)

    assert report.rejected == 1
    assert "surplus" in report.rejections[0].value


def test_confirmed_import_saves_mapping(base, pos, importer):
    data = "会员卡号,Customer\nV-1,Wu Lei\n".encode()

    import_file(
        data,
        "members",
        file_name="pos.csv",
        channel=pos,
        user=importer,
    )

    mapping = ColumnMapping.objects.get(channel=pos, kind="members")
    assert mapping.columns == {"external_id": "会员卡号"}
    assert mapping.updated_by == importer


def test_dry_run_saves_no_mapping(base, pos):
    data = "会员卡号\nV-1\n".encode()

    import_file(data, "members", file_name="pos.csv", channel=pos, dry_run=True)

    assert not ColumnMapping.objects.exists()


def test_refused_import_saves_no_mapping(base, pos):
    data = b"Customer\nWu Lei\n"

    report = import_file(data, "members", file_name="pos.csv", channel=pos)

    assert "external_id not found" in report.refused
    assert not ColumnMapping.objects.exists()


def test_mapping_kept_per_kind(base, pos):
    ColumnMapping.objects.create(
        channel=pos, kind="activities", columns={"external_id": "VIP No."}
    )

    report = import_file(
        POS_MEMBERS.encode(), "members", file_name="pos.csv", channel=pos
    )

    assert "external_id not found" in report.refused


# The import form


def upload(client: Client, url_name: str, name: str, content: bytes, **fields):
    data = {
        "resource": "0",
        "format": "0",
        "import_file": SimpleUploadedFile(name, content),
        **fields,
    }
    return client.post(reverse(url_name), data)


def test_import_form_offers_channels(base, pos, importer_client):
    response = importer_client.get(reverse("admin:members_member_import"))

    content = response.content.decode()
    assert "Channel of this file" in content
    assert f'<option value="{pos.pk}">Pudong POS</option>' in content


def test_admin_import_with_channel(base, pos, importer, importer_client):
    ColumnMapping.objects.create(channel=pos, kind="members", columns=POS_MAPPING)

    preview = upload(
        importer_client,
        "admin:members_member_import",
        "pos.csv",
        POS_MEMBERS.encode(),
        channel=str(pos.pk),
    )
    form = preview.context["confirm_form"]
    assert form.initial["channel"] == pos.pk
    importer_client.post(
        reverse("admin:members_member_process_import"), {**form.initial}
    )

    identity = ChannelIdentity.objects.get(external_id="V-2")
    assert identity.channel == pos
    assert identity.member.name == "Sun Li"
    mapping = ColumnMapping.objects.get(channel=pos, kind="members")
    assert mapping.columns == POS_MAPPING
    assert mapping.updated_by == importer


def test_admin_refusal_explains_mapping(base, importer_client):
    preview = upload(
        importer_client, "admin:members_member_import", "pos.csv", POS_MEMBERS.encode()
    )

    content = preview.content.decode()
    assert "File rejected" in content
    assert "save a column mapping for the file" in content


# The column mapping admin


def mapping_form(channel: Channel, kind: str, **headers: str) -> dict[str, str]:
    data = {"channel": str(channel.pk), "kind": kind}
    data.update({f"header_{column}": header for column, header in headers.items()})
    return data


def test_mapping_admin_saves_header_fields(pos, editor_client):
    response = editor_client.post(
        reverse("admin:members_columnmapping_add"),
        mapping_form(pos, "activities", external_id=" VIP No. ", amount="Paid"),
    )

    assert response.status_code == 302
    mapping = ColumnMapping.objects.get()
    assert mapping.columns == {"external_id": "VIP No.", "amount": "Paid"}
    assert mapping.updated_by.username == "editor"


def test_mapping_admin_shows_saved_headers(pos, editor_client):
    mapping = ColumnMapping.objects.create(
        channel=pos, kind="members", columns=POS_MAPPING
    )

    response = editor_client.get(
        reverse("admin:members_columnmapping_change", args=[mapping.pk])
    )

    content = response.content.decode()
    assert 'name="header_external_id"' in content
    assert 'value="VIP No."' in content
    assert 'name="columns"' not in content


def test_mapping_admin_rejects_column_of_other_kind(pos, editor_client):
    response = editor_client.post(
        reverse("admin:members_columnmapping_add"),
        mapping_form(pos, "members", external_id="VIP No.", amount="Paid"),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["header_amount"]
    assert "amount is not a column of members files" in errors["header_amount"][0]
    assert not ColumnMapping.objects.exists()


def test_mapping_admin_rejects_same_header_twice(pos, editor_client):
    response = editor_client.post(
        reverse("admin:members_columnmapping_add"),
        mapping_form(pos, "members", external_id="Number", phone="ＮＵＭＢＥＲ"),
    )

    errors = response.context["adminform"].form.errors
    assert list(errors) == ["header_phone"]
    assert "Column external_id already uses the header" in errors["header_phone"][0]


def test_mapping_admin_offers_file_kinds_only(pos, editor_client):
    response = editor_client.post(
        reverse("admin:members_columnmapping_add"),
        mapping_form(pos, "opening_balances", external_id="VIP No."),
    )

    errors = response.context["adminform"].form.errors
    assert "kind" in errors


def test_mapping_list_shows_headers(pos, editor_client):
    ColumnMapping.objects.create(channel=pos, kind="members", columns=POS_MAPPING)

    response = editor_client.get(reverse("admin:members_columnmapping_changelist"))

    assert "external_id = VIP No." in response.content.decode()


# The import commands


def test_command_channel_option(base, pos, tmp_path, capsys):
    ColumnMapping.objects.create(channel=pos, kind="members", columns=POS_MAPPING)
    path = tmp_path / "pos.csv"
    path.write_text(POS_MEMBERS, encoding="utf-8")

    call_command("import_members", str(path), "--channel", "POS-Pudong")

    assert "2 created" in capsys.readouterr().out
    identity = ChannelIdentity.objects.get(external_id="V-1")
    assert identity.channel == pos
    assert ImportBatch.objects.latest("pk").channel == pos


def test_command_unknown_channel_lists_codes(base, tmp_path):
    path = tmp_path / "pos.csv"
    path.write_text(POS_MEMBERS, encoding="utf-8")

    with pytest.raises(CommandError, match="Channel 'nowhere' not found") as raised:
        call_command("import_members", str(path), "--channel", "nowhere")

    assert "shopify, store-xuhui, tmall, wechat-mini" in str(raised.value)
    assert not Member.objects.filter(identities__external_id="V-1").exists()


def test_saved_mapping_keeps_columns_absent_from_file(base, pos):
    ColumnMapping.objects.create(channel=pos, kind="members", columns=POS_MAPPING)

    import_file(
        b"VIP No.,Customer\nV-1,Wu Lei\n", "members", file_name="p.csv", channel=pos
    )

    mapping = ColumnMapping.objects.get(channel=pos, kind="members")
    assert mapping.columns == POS_MAPPING
