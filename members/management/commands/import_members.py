from members.importing.cli import ImportCommand
from members.importing.columns import MEMBERS


class Command(ImportCommand):
    help = (
        "Import members from a CSV or XLSX file with the columns external_id, "
        "name, phone, email, channel and joined_at (Chinese headers work too)."
    )
    kind = MEMBERS
