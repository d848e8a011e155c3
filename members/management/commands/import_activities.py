from members.importing.cli import ImportCommand
from members.importing.columns import ACTIVITIES


class Command(ImportCommand):
    help = (
        "Import activities (purchases, refunds, visits ...) from a CSV or XLSX "
        "file with the columns external_id, occurred_at, amount, channel, kind "
        "and reference, and optionally quantity."
    )
    kind = ACTIVITIES
