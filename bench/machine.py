"""The machine, versions and code a benchmark ran on, for docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages as "1.2 0.9 0.7"."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def git_commit() -> str:
    """Return the short commit, plus "with uncommitted changes" when the tree is dirty."""
    root = Path(__file__).resolve().parent.parent
    # Fixed git commands in this repository; no input reaches them.
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{commit} with uncommitted changes" if status else commit


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def describe_machine() -> str:
    """Return one line with cores, memory, Python, Django, database and commit.

    Needs Django set up, because it queries the database for its version.
    """
    import django
    from django.db import connection

    database = connection.vendor
    if database == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            database = f"PostgreSQL {cursor.fetchone()[0]}"
    return (
        f"{os.cpu_count()} cores, {_memory_gib():.0f} GiB, {platform.machine()}, "
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"{database}, commit {git_commit()}"
    )
