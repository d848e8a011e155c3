"""Hostile uploads: each is rejected with a clear message and bounded memory.

Every hostile file goes through the admin's import page (django-import-export,
read in the request) and through the streaming import that the background
import and the commands use. Each run happens in a fresh Python process on
its own copy of a migrated SQLite database, so that the peak memory measured
(VmHWM, reset through /proc/self/clear_refs just before the import) belongs
to that one file. The limit asserted is 100 MiB of growth above the process's
memory before the import.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import openpyxl
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
MAX_GROWTH_MIB = 100
MIB = 1024 * 1024
MEMBER_HEADER = ["external_id", "name", "channel", "joined_at"]

# Runs in the child process: sys.argv is [mode, kind, path]. It prints one
# JSON line with the memory growth and the message shown to staff.
PROBE = r"""
import json, os, sys
import django

django.setup()

from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from members.importing.streaming import import_path


def status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


mode, kind, path = sys.argv[1:4]
if mode == "admin":
    user = User.objects.create_superuser("probe", "", "probe-pw-12345")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    url = reverse(
        "admin:members_member_import" if kind == "members"
        else "admin:members_activity_import"
    )
    client.get(url)
    file_format = "1" if path.endswith(".xlsx") else "0"
    with open(path, "rb") as handle:
        content = handle.read()

with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
before = status_kib("VmRSS")

if mode == "admin":
    upload = SimpleUploadedFile(os.path.basename(path), content)
    response = client.post(
        url,
        {"resource": "0", "format": file_format, "import_file": upload},
        HTTP_ACCEPT_LANGUAGE="en",
    )
    message = response.content.decode()
    status = response.status_code
else:
    report = import_path(path, kind)
    message = report.refused or report.summary()
    status = None

peak = status_kib("VmHWM")
print(json.dumps({"growth_mib": (peak - before) / 1024, "message": message, "status": status}))
"""


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile-db") / "db.sqlite3"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=_child_env(path, path.parent),
        check=True,
        timeout=300,
    )
    return path


def _child_env(database: Path, workdir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "CRM_", "PYTEST"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="crm.settings",
        DATABASE_URL=f"sqlite:///{database}",
        CRM_CACHE_DIR=str(workdir / "cache"),
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="WARNING",
    )
    return env


def probe(mode: str, kind: str, file: Path, database: Path) -> dict:
    """Import ``file`` in a child process and return its growth and message."""
    workdir = file.parent / f"run-{mode}-{file.stem}"
    workdir.mkdir()
    copy = workdir / "db.sqlite3"
    shutil.copy(database, copy)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode, kind, str(file)],
        cwd=ROOT,
        env=_child_env(copy, workdir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# Hostile files


def _minimal_xlsx() -> bytes:
    workbook = openpyxl.Workbook()
    workbook.active.append(MEMBER_HEADER)
    workbook.active.append(["M-1", "Ann", "store-xuhui", "2020-01-01"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _xlsx_with_part(path: Path, part: str, write_part) -> Path:
    """Write an XLSX whose ``part`` is replaced by what ``write_part`` writes."""
    source = zipfile.ZipFile(io.BytesIO(_minimal_xlsx()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as target:
        for info in source.infolist():
            if info.filename == part:
                with target.open(part, "w", force_zip64=True) as stream:
                    write_part(stream)
            else:
                target.writestr(info, source.read(info.filename))
        if part not in source.namelist():
            with target.open(part, "w") as stream:
                write_part(stream)
    return path


SHEET = "xl/worksheets/sheet1.xml"
SHEET_START = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    b"<sheetData>"
)
SHEET_END = b"</sheetData></worksheet>"


def _header_row() -> bytes:
    cells = "".join(
        f'<c r="{chr(65 + index)}1" t="inlineStr"><is><t>{name}</t></is></c>'
        for index, name in enumerate(MEMBER_HEADER)
    )
    return f'<row r="1">{cells}</row>'.encode()


def zip_bomb_xlsx(path: Path, inflated_mib: int) -> Path:
    """An XLSX whose sheet inflates to ``inflated_mib`` MiB of blank space."""

    def write(stream) -> None:
        stream.write(SHEET_START + _header_row())
        block = b" " * MIB
        for _ in range(inflated_mib):
            stream.write(block)
        stream.write(SHEET_END)

    return _xlsx_with_part(path, SHEET, write)


def _entity_sheet(doctype: bytes, cell_text: bytes) -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        + doctype
        + b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        + b"<sheetData>"
        + _header_row()
        + b'<row r="2"><c r="A2" t="inlineStr"><is><t>M-1</t></is></c>'
        + b'<c r="B2" t="inlineStr"><is><t>'
        + cell_text
        + b"</t></is></c></row>"
        + SHEET_END
    )


def billion_laughs_xlsx(path: Path) -> Path:
    """An XLSX whose sheet declares entities that expand to 10**9 "lol"s."""
    levels = [b'<!ENTITY lol0 "lol">']
    for level in range(1, 10):
        refs = f"&lol{level - 1};".encode() * 10
        levels.append(f"<!ENTITY lol{level} ".encode() + b'"' + refs + b'">')
    doctype = b"<!DOCTYPE worksheet [" + b"".join(levels) + b"]>"
    sheet = _entity_sheet(doctype, b"&lol9;")
    return _xlsx_with_part(path, SHEET, lambda stream: stream.write(sheet))


def external_entity_xlsx(path: Path) -> Path:
    """An XLSX whose sheet pulls /etc/passwd in through an external entity."""
    doctype = b'<!DOCTYPE worksheet [<!ENTITY leak SYSTEM "file:///etc/passwd">]>'
    sheet = _entity_sheet(doctype, b"&leak;")
    return _xlsx_with_part(path, SHEET, lambda stream: stream.write(sheet))


def shared_strings_laughs_xlsx(path: Path) -> Path:
    """The billion laughs in the shared-string table instead of the sheet."""
    levels = [b'<!ENTITY a0 "lol">']
    for level in range(1, 10):
        refs = f"&a{level - 1};".encode() * 10
        levels.append(f"<!ENTITY a{level} ".encode() + b'"' + refs + b'">')
    strings = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE sst ['
        + b"".join(levels)
        + b']><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
        + b' count="1" uniqueCount="1"><si><t>&a9;</t></si></sst>'
    )
    sheet = (
        SHEET_START
        + _header_row()
        + b'<row r="2"><c r="A2" t="s"><v>0</v></c></row>'
        + SHEET_END
    )
    _xlsx_with_part(path, SHEET, lambda stream: stream.write(sheet))
    patched = path.with_name(path.stem + "-sst.xlsx")
    source = zipfile.ZipFile(path)
    with zipfile.ZipFile(patched, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename == "[Content_Types].xml":
                types = source.read(info.filename).replace(
                    b"</Types>",
                    b'<Override PartName="/xl/sharedStrings.xml" ContentType="'
                    b"application/vnd.openxmlformats-officedocument."
                    b'spreadsheetml.sharedStrings+xml"/></Types>',
                )
                target.writestr(info, types)
            elif info.filename == "xl/_rels/workbook.xml.rels":
                rels = source.read(info.filename).replace(
                    b"</Relationships>",
                    b'<Relationship Id="rIdSst" Type="http://schemas.openxmlformats.org/'
                    b'officeDocument/2006/relationships/sharedStrings" '
                    b'Target="sharedStrings.xml"/></Relationships>',
                )
                target.writestr(info, rels)
            else:
                target.writestr(info, source.read(info.filename))
        target.writestr("xl/sharedStrings.xml", strings)
    return patched


def shared_strings_xlsx(path: Path, table_mib: float) -> Path:
    """A member XLSX whose shared-string table contains ``table_mib`` MiB of
    distinct 10-character strings, the costliest kind for openpyxl."""
    count = int(table_mib * MIB) // len(b"<si><t>s000000000</t></si>")
    table = io.BytesIO()
    table.write(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<sst xmlns='
        b'"http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    )
    for index in range(count):
        table.write(b"<si><t>s%09d</t></si>" % index)
    table.write(b"</sst>")
    source = zipfile.ZipFile(shared_strings_laughs_xlsx(path.with_name("base.xlsx")))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename == "xl/sharedStrings.xml":
                target.writestr(info.filename, table.getvalue())
            else:
                target.writestr(info.filename, source.read(info.filename))
    return path


def long_line_csv(path: Path, line_mib: int) -> Path:
    """A member CSV whose second line is ``line_mib`` MiB without a line break."""
    with path.open("wb") as handle:
        handle.write(",".join(MEMBER_HEADER).encode() + b"\n")
        block = b"A" * MIB
        for _ in range(line_mib):
            handle.write(block)
    return path


# Through the streaming import (background import and commands)


def assert_bounded(result: dict) -> None:
    assert result["growth_mib"] < MAX_GROWTH_MIB, result["growth_mib"]


def test_stream_rejects_zip_bomb_by_total(tmp_path, migrated_sqlite):
    file = zip_bomb_xlsx(tmp_path / "bomb.xlsx", inflated_mib=400)

    result = probe("stream", "members", file, migrated_sqlite)

    assert_bounded(result)
    assert "would expand to" in result["message"]
    assert "MiB limit, so it was not opened" in result["message"]


def test_stream_rejects_zip_bomb_by_ratio(tmp_path, migrated_sqlite):
    file = zip_bomb_xlsx(tmp_path / "ratio.xlsx", inflated_mib=60)

    result = probe("stream", "members", file, migrated_sqlite)

    assert_bounded(result)
    assert "the size pattern of a zip bomb" in result["message"]


@pytest.mark.parametrize(
    "make", [billion_laughs_xlsx, shared_strings_laughs_xlsx, external_entity_xlsx]
)
def test_stream_rejects_xml_entities(tmp_path, migrated_sqlite, make):
    file = make(tmp_path / "entities.xlsx")

    result = probe("stream", "members", file, migrated_sqlite)

    assert_bounded(result)
    assert "not a valid or safe Excel file" in result["message"]
    assert "root:" not in result["message"]


def test_stream_rejects_large_shared_strings(tmp_path, migrated_sqlite):
    file = shared_strings_xlsx(tmp_path / "strings.xlsx", table_mib=40)

    result = probe("stream", "members", file, migrated_sqlite)

    assert_bounded(result)
    assert "shared-string table is 40.0 MiB" in result["message"]
    assert "more than the 12 MiB limit" in result["message"]


def test_stream_shared_strings_under_limit_bounded(tmp_path, migrated_sqlite):
    file = shared_strings_xlsx(tmp_path / "strings.xlsx", table_mib=11.9)

    result = probe("stream", "members", file, migrated_sqlite)

    assert_bounded(result)
    assert "shared-string table" not in result["message"]


def test_stream_rejects_gigantic_line(tmp_path, migrated_sqlite):
    file = long_line_csv(tmp_path / "line.csv", line_mib=300)

    result = probe("stream", "members", file, migrated_sqlite)

    assert_bounded(result)
    assert "Line 2 is longer than 2,097,152 characters" in result["message"]


# Through the admin's import page


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda path: zip_bomb_xlsx(path, 400), "would expand to"),
        (lambda path: zip_bomb_xlsx(path, 60), "the size pattern of a zip bomb"),
        (billion_laughs_xlsx, "not a valid or safe Excel file"),
        (shared_strings_laughs_xlsx, "not a valid or safe Excel file"),
        (external_entity_xlsx, "not a valid or safe Excel file"),
    ],
    ids=["zip-total", "zip-ratio", "laughs", "laughs-shared", "external-entity"],
)
def test_admin_rejects_hostile_xlsx(tmp_path, migrated_sqlite, make, expected):
    file = make(tmp_path / "hostile.xlsx")

    result = probe("admin", "members", file, migrated_sqlite)

    assert_bounded(result)
    assert result["status"] == 200
    assert expected in result["message"]
    assert "root:x:0:0" not in result["message"]


def test_admin_rejects_long_line_under_size_cap(tmp_path, migrated_sqlite):
    file = long_line_csv(tmp_path / "line.csv", line_mib=4)

    result = probe("admin", "members", file, migrated_sqlite)

    assert_bounded(result)
    assert "line 2 is longer than" in result["message"]


# Size caps checked before a file is read


def _upload(name: str, size: int) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, b"x" * size)


def test_admin_preview_cap_from_settings(admin_client, settings):
    settings.CRM_IMPORT_ADMIN_MAX_BYTES = 1024

    response = admin_client.post(
        reverse("admin:members_member_import"),
        {"resource": "0", "format": "0", "import_file": _upload("m.csv", 2048)},
        HTTP_ACCEPT_LANGUAGE="en",
    )

    assert response.status_code == 200
    assert "previews at once" in response.content.decode()


def test_large_import_cap_from_settings(admin_client, settings):
    settings.CRM_IMPORT_STREAMING_MAX_BYTES = 1024

    response = admin_client.post(
        reverse("members:large-import"),
        {"kind": "members", "file": _upload("m.csv", 2048)},
    )

    assert response.status_code == 200
    assert "more than the" in response.content.decode()


def test_openings_cap_from_settings(admin_client, settings):
    settings.CRM_IMPORT_MAX_BYTES = 1024

    response = admin_client.post(
        reverse("admin:members_opening_balances"),
        {"import_file": _upload("o.csv", 2048)},
    )

    assert response.status_code == 200
    assert "more than the" in response.content.decode()


def test_request_body_cap_rejects_before_parsing(admin_client, settings):
    settings.CRM_UPLOAD_MAX_BYTES = 4096

    response = admin_client.post(
        reverse("members:large-import"),
        {"kind": "members", "file": _upload("m.csv", 8192)},
    )

    assert response.status_code == 413


def test_upload_caps_have_defaults():
    assert settings.CRM_IMPORT_ADMIN_MAX_BYTES == 5 * MIB
    assert settings.CRM_IMPORT_MAX_BYTES == 50 * MIB
    assert settings.CRM_UPLOAD_MAX_BYTES >= settings.CRM_IMPORT_STREAMING_MAX_BYTES
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 10 * MIB
