"""Column layouts of member and activity files, and header aliases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.translation import gettext

from members.importing.errors import FileRejected
from members.importing.text import normalize_header

MEMBERS = "members"
ACTIVITIES = "activities"
KINDS = (MEMBERS, ACTIVITIES)

MEMBER_COLUMNS = ("external_id", "name", "phone", "email", "channel", "joined_at")
ACTIVITY_COLUMNS = (
    "external_id",
    "occurred_at",
    "amount",
    "channel",
    "kind",
    "reference",
    "quantity",
)
COLUMNS = {MEMBERS: MEMBER_COLUMNS, ACTIVITIES: ACTIVITY_COLUMNS}
REQUIRED_COLUMNS = {
    MEMBERS: ("external_id", "channel"),
    ACTIVITIES: (
        "external_id",
        "occurred_at",
        "amount",
        "channel",
        "kind",
        "reference",
    ),
}

# Headers seen in real exports (Chinese point-of-sale and e-commerce systems,
# Excel templates), compared after ``normalize_header``.
_ALIASES = {
    "external_id": (
        "会员号", "会员编号", "会员卡号", "卡号", "客户编号", "客户号",
        "member_id", "member_no", "customer_id", "card_no", "card_number",
    ),
    "name": ("姓名", "名字", "会员姓名", "客户姓名", "full_name", "customer_name"),
    "phone": (
        "手机", "手机号", "手机号码", "电话", "电话号码", "联系电话",
        "mobile", "mobile_phone", "tel", "telephone", "phone_number",
    ),
    "email": ("邮箱", "电子邮箱", "电子邮件", "e_mail", "mail", "email_address"),
    "channel": ("渠道", "渠道代码", "来源渠道", "channel_code", "source"),
    "joined_at": (
        "入会日期", "注册日期", "入会时间", "注册时间",
        "joined_on", "join_date", "joined", "registered_at", "signup_date",
    ),
    "occurred_at": (
        "时间", "日期", "交易时间", "交易日期", "下单时间", "支付时间",
        "date", "datetime", "time", "timestamp", "order_date", "occurred_on",
    ),
    "amount": (
        "金额", "实付金额", "交易金额", "消费金额", "支付金额", "total", "value",
    ),
    "kind": ("类型", "交易类型", "type", "activity_kind"),
    "reference": (
        "单号", "订单号", "流水号", "交易单号", "交易流水号",
        "order_id", "order_no", "transaction_id", "ref",
    ),
    "quantity": ("数量", "件数", "qty"),
}  # fmt: skip


def _alias_table() -> dict[str, str]:
    table = {}
    for column, aliases in _ALIASES.items():
        table[normalize_header(column)] = column
        for alias in aliases:
            table[normalize_header(alias)] = column
    return table


_ALIAS_TABLE = _alias_table()


@dataclass(frozen=True)
class ColumnMap:
    """Positions of the known columns in the file, and the headers left unused."""

    positions: dict[str, int]
    ignored: tuple[str, ...]


MISSING_COLUMN_HINT = (
    "Rename the header in the file to one of these column names, or save a "
    "column mapping for the file's channel (Members > Column mappings) and "
    "choose that channel on the import form."
)


def check_mapping(kind: str, mapping: dict[str, str]) -> list[tuple[str, str]]:
    """Return (column, problem) for what is wrong with a column mapping.

    Every key must be a column of ``kind``, and no two columns may name the
    same header once headers are normalised. An empty list means it is valid.
    The problems are translated, because staff read them on the admin form.
    """
    allowed = COLUMNS[kind]
    problems = []
    seen: dict[str, str] = {}
    for column, header in mapping.items():
        if column not in allowed:
            problem = gettext(
                "%(column)s is not a column of %(kind)s files; leave it empty. "
                "The columns are %(columns)s."
            ) % {"column": column, "kind": kind, "columns": ", ".join(allowed)}
            problems.append((column, problem))
            continue
        key = normalize_header(header)
        if not key:
            continue
        if key in seen:
            problem = gettext(
                "Column %(other)s already uses the header %(header)s; give each "
                "column its own header."
            ) % {"other": seen[key], "header": header.strip()}
            problems.append((column, problem))
        else:
            seen[key] = column
    return problems


def _saved_headers(mapping: dict[str, str], allowed: Sequence[str]) -> dict[str, str]:
    """Return the column of each normalised header that a saved mapping names."""
    table = {}
    for column, header in mapping.items():
        key = normalize_header(header)
        if column in allowed and key:
            table[key] = column
    return table


def _both_mean(first: str, second: str, column: str) -> FileRejected:
    return FileRejected(
        f"Headers {first.strip()!r} and {second.strip()!r} both mean column "
        f"{column}. Remove or rename one of them and import again."
    )


def map_headers(
    headers: Sequence[str],
    kind: str,
    mapping: dict[str, str] | None = None,
    *,
    optional: Sequence[str] = (),
) -> ColumnMap:
    """Map file headers to the columns of ``kind``.

    ``mapping`` is a channel's saved mapping ({column: header}). Its headers
    are matched first, and a column it finds in the file ignores any other
    header that is an alias of that column. The remaining headers are
    matched against the built-in aliases. Columns in ``optional`` are not
    required this time, e.g. the channel when staff chose one for the file.

    Raises FileRejected when a required column is missing or when two
    headers mean the same column.
    """
    allowed = COLUMNS[kind]
    saved = _saved_headers(mapping or {}, allowed)
    positions: dict[str, int] = {}
    for index, header in enumerate(headers):
        column = saved.get(normalize_header(header))
        if column is None:
            continue
        if column in positions:
            raise _both_mean(headers[positions[column]], header, column)
        positions[column] = index
    saved_columns = set(positions)
    saved_positions = set(positions.values())
    ignored = []
    for index, header in enumerate(headers):
        if index in saved_positions:
            continue
        column = _ALIAS_TABLE.get(normalize_header(header))
        if column not in allowed or column in saved_columns:
            if header.strip():
                ignored.append(header.strip())
            continue
        if column in positions:
            raise _both_mean(headers[positions[column]], header, column)
        positions[column] = index
    required = [column for column in REQUIRED_COLUMNS[kind] if column not in optional]
    missing = [column for column in required if column not in positions]
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        raise FileRejected(
            f"Required {noun} {', '.join(missing)} not found in the header row. "
            f"A {kind} file needs the columns {', '.join(REQUIRED_COLUMNS[kind])}. "
            + MISSING_COLUMN_HINT
        )
    return ColumnMap(positions=positions, ignored=tuple(ignored))


def headers_used(headers: Sequence[str], columns: ColumnMap) -> dict[str, str]:
    """Return {column: header} for the columns found in the file's header row.

    Positions past the header row, such as an added channel column, are left
    out, so the result can be saved as the channel's column mapping.
    """
    return {
        column: headers[index].strip()
        for column, index in sorted(columns.positions.items())
        if index < len(headers)
    }
