"""Benchmark: the member page under load, against a hello view.

Starts gunicorn with bench.settings on a free loopback port and measures,
with the same middleware for both:

* the maximum requests per second of a hello view (bench.urls) and of the
  member page, with wrk cycling through signed links of real members;
* the latency percentiles of the member page at 80 % of its maximum rate,
  sent at a constant rate by bench.loadtools.constant_rate;
* the queries one member page costs, counted in this process with Django's
  test client.

Needs a database filled by bench.generate whose members have tiers (run
bench.reevaluate_bench first):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_h4_1m \\
        .venv/bin/python -m bench.page_load
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path

from bench import loadtools
from bench.generate import setup_django
from bench.machine import describe_machine, load_average

# wrk runs this script in each of its threads: every request takes the next
# path from the file named by BENCH_PATHS, so the page is not served from
# one member's rows only.
CYCLE_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do
  paths[#paths + 1] = line
end
local position = math.random(#paths)
request = function()
  position = position % #paths + 1
  return wrk.format("GET", paths[position])
end
"""


def member_paths(count: int) -> list[str]:
    """Return the page paths of ``count`` members picked with a fixed seed."""
    from members.links import member_page_url
    from members.models import Member

    last = Member.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    rng = random.Random(3)
    ids = rng.sample(range(1, last + 1), min(count * 2, last))
    members = Member.objects.filter(
        pk__in=ids, merged_into__isnull=True, tier__isnull=False
    )[:count]
    paths = [member_page_url(member) for member in members]
    if not paths:
        raise SystemExit("No member has a tier; run bench.reevaluate_bench first.")
    return paths


def count_queries(paths: list[str]) -> list[int]:
    """Return the queries each of ``paths`` costs, rendered in this process."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="127.0.0.1")
    counts = []
    for path in paths:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path)
        if response.status_code != 200:
            raise SystemExit(f"{path} returned {response.status_code}.")
        counts.append(len(captured.captured_queries))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--members", type=int, default=3000, help="Member links wrk cycles through."
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="gunicorn worker processes."
    )
    parser.add_argument("--connections", type=int, default=8, help="wrk connections.")
    parser.add_argument(
        "--seconds", type=int, default=30, help="Seconds of each measurement."
    )
    arguments = parser.parse_args()
    os.environ["DEBUG"] = "false"
    setup_django()

    paths = member_paths(arguments.members)
    queries = count_queries(paths[:20])
    print(describe_machine())
    print(
        f"queries per member page over 20 members: min {min(queries)}, max {max(queries)}"
    )

    with tempfile.TemporaryDirectory(prefix="page-load-") as folder:
        work = Path(folder)
        script = work / "cycle.lua"
        script.write_text(CYCLE_SCRIPT)
        page_file = work / "pages.txt"
        page_file.write_text("\n".join(paths) + "\n")
        hello_file = work / "hello.txt"
        hello_file.write_text("/bench/hello/\n")
        port = loadtools.free_port()
        log = Path(tempfile.gettempdir()) / "bench-page-load-gunicorn.log"
        with loadtools.gunicorn(port, arguments.workers, dict(os.environ), log):
            base = f"http://{loadtools.HOST}:{port}"

            def measure(label: str, path_file: Path) -> loadtools.WrkResult:
                # A short warm-up fills each worker's caches first.
                loadtools.run_wrk(
                    base,
                    script=script,
                    connections=arguments.connections,
                    seconds=5,
                    env={"BENCH_PATHS": str(path_file)},
                )
                result = loadtools.run_wrk(
                    base,
                    script=script,
                    connections=arguments.connections,
                    seconds=arguments.seconds,
                    env={"BENCH_PATHS": str(path_file)},
                )
                print(
                    f"{label}: {result.rate:.1f} requests/s, {result.requests} "
                    f"requests, non-2xx {result.non_2xx}, errors {result.errors!r}, "
                    f"p50 {result.latency_p50_ms:.1f} ms, p99 "
                    f"{result.latency_p99_ms:.1f} ms, load {load_average()}",
                    flush=True,
                )
                return result

            hello = measure("hello view, max rate", hello_file)
            page = measure("member page, max rate", page_file)
            target = 0.8 * page.rate
            steady = loadtools.constant_rate(
                port, paths, target, arguments.seconds, connections=32
            )
            print(
                f"member page at {target:.1f} requests/s (80 %): "
                f"{json.dumps(steady.__dict__)}, load {load_average()}",
                flush=True,
            )

    print()
    print("| measurement | requests/s | p50 ms | p99 ms | ratio to hello |")
    print("| --- | --- | --- | --- | --- |")
    for label, result in (("hello view, max", hello), ("member page, max", page)):
        print(
            f"| {label} | {result.rate:.1f} | {result.latency_p50_ms:.1f} | "
            f"{result.latency_p99_ms:.1f} | {result.rate / hello.rate:.2f} |"
        )
    print(
        f"| member page at 80 % of its max, constant rate | {target:.1f} | "
        f"{steady.p50_ms:.1f} | {steady.p99_ms:.1f} | — |"
    )


if __name__ == "__main__":
    main()
