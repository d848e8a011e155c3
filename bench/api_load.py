"""Benchmark: the event API, single events and batches, against a hello POST.

Starts gunicorn with bench.settings on a free loopback port, with the
per-token rate limit raised to CRM_API_TOKEN_RATE=10000000/min so that it
never responds 429 (the throttle still runs; ``--rate ""`` turns it off).
It creates a channel token for channel ``bench-store`` of bench.generate
and measures:

* the maximum rate of single events (POST /api/v1/events/, each with a new
  reference and Idempotency-Key) and of a hello POST view with the same
  authentication, permission, parser and throttle classes (bench.urls),
  both with wrk;
* batches of 1,000 events (POST /api/v1/events/batch/) from a few
  concurrent clients, in events per second;
* duplicates: the ledger must hold each reference sent once, also after
  a replay of some requests with the same Idempotency-Key and of some
  events with a new key but the same reference.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_h4_1m \\
        .venv/bin/python -m bench.api_load
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench import loadtools
from bench.generate import setup_django
from bench.machine import describe_machine, load_average

CHANNEL = "bench-store"
RATE = "10000000/min"

# Each wrk thread numbers its requests; reference and Idempotency-Key are
# "<prefix>-<thread>-<number>", so every request is new. done() prints how
# many requests each thread built and how many got status 201.
EVENT_SCRIPT = """
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do
  ids[#ids + 1] = line
end
local prefix = os.getenv("BENCH_PREFIX")
local token = os.getenv("BENCH_TOKEN")
local occurred_at = os.getenv("BENCH_OCCURRED_AT")
local path = os.getenv("BENCH_PATH")
local threads = {}
local thread_count = 0

setup = function(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
  table.insert(threads, thread)
end

init = function(args)
  built = 0
  created = 0
  other = 0
end

request = function()
  built = built + 1
  local reference = prefix .. "-" .. thread_number .. "-" .. built
  local body = string.format(
    '{"external_id":"%s","reference":"%s","occurred_at":"%s",' ..
    '"amount":"25.00","kind":"purchase"}',
    ids[(built % #ids) + 1], reference, occurred_at)
  local headers = {}
  headers["Authorization"] = "Bearer " .. token
  headers["Content-Type"] = "application/json"
  headers["Idempotency-Key"] = reference
  return wrk.format("POST", path, headers, body)
end

response = function(status, headers, body)
  if status == 201 then
    created = created + 1
  else
    other = other + 1
  end
end

done = function(summary, latency, requests)
  for _, thread in ipairs(threads) do
    io.write(string.format("thread=%d built=%d created=%d other=%d\\n",
      thread:get("thread_number"), thread:get("built"),
      thread:get("created"), thread:get("other")))
  end
end
"""


def event_body(external_id: str, reference: str, occurred_at: str) -> dict[str, str]:
    """Return an event as EVENT_SCRIPT builds it."""
    return {
        "external_id": external_id,
        "reference": reference,
        "occurred_at": occurred_at,
        "amount": "25.00",
        "kind": "purchase",
    }


def prepare(count: int) -> tuple[str, list[str]]:
    """Create a channel token and pick ``count`` member ids of the channel."""
    from members.api_auth import issue_token
    from members.models import Channel, ChannelIdentity

    channel = Channel.objects.get(code=CHANNEL)
    _row, token = issue_token(channel, "api load benchmark")
    ids = list(
        ChannelIdentity.objects.filter(channel=channel)
        .order_by("?")
        .values_list("external_id", flat=True)[:count]
    )
    return token, ids


def stored_references(prefix: str) -> tuple[int, int]:
    """Return the activities whose reference starts with ``prefix``, and the distinct ones."""
    from django.db.models import Count

    from members.models import Activity

    totals = Activity.objects.filter(
        channel__code=CHANNEL, reference__startswith=f"{prefix}-"
    ).aggregate(rows=Count("pk"), distinct=Count("reference", distinct=True))
    return totals["rows"], totals["distinct"]


def post(
    connection: http.client.HTTPConnection,
    path: str,
    token: str,
    body: object,
    key: str | None,
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    connection.request("POST", path, body=json.dumps(body), headers=headers)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def stored_thread_references(prefix: str, count: int) -> list[int]:
    """Return the request numbers of wrk thread 1 that the ledger holds, lowest first."""
    from members.models import Activity

    references = Activity.objects.filter(
        channel__code=CHANNEL, reference__startswith=f"{prefix}-1-"
    ).values_list("reference", flat=True)
    return sorted(int(reference.rsplit("-", 1)[1]) for reference in references)[:count]


def replay(
    port: int, token: str, prefix: str, ids: list[str], occurred_at: str, count: int
) -> dict[str, Any]:
    """Send ``count`` stored events of wrk thread 1 again, with and without their key."""
    connection = http.client.HTTPConnection(loadtools.HOST, port, timeout=60)
    same_key: dict[str, int] = {}
    new_key: dict[str, int] = {}
    replayed = 0
    numbers = stored_thread_references(prefix, count)
    for number in numbers:
        reference = f"{prefix}-1-{number}"
        body = event_body(ids[number % len(ids)], reference, occurred_at)
        status, headers, _ = post(connection, "/api/v1/events/", token, body, reference)
        same_key[str(status)] = same_key.get(str(status), 0) + 1
        replayed += headers.get("Idempotent-Replayed") == "true"
        status, _, _ = post(
            connection, "/api/v1/events/", token, body, f"replay-{uuid.uuid4()}"
        )
        new_key[str(status)] = new_key.get(str(status), 0) + 1
    connection.close()
    return {
        "sent_twice": len(numbers),
        "same_key": same_key,
        "replayed_header": replayed,
        "new_key": new_key,
    }


def send_batches(
    port: int,
    token: str,
    bodies: list[list[dict[str, str]]],
    clients: int,
    key_prefix: str,
) -> tuple[float, dict[str, int]]:
    """POST ``bodies`` as batches from ``clients`` threads; return seconds and statuses.

    Batch ``i`` carries the Idempotency-Key "<key_prefix>-<i>".
    """
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    position = iter(range(len(bodies)))

    def client() -> None:
        connection = http.client.HTTPConnection(loadtools.HOST, port, timeout=300)
        while True:
            with lock:
                index = next(position, None)
            if index is None:
                break
            payload = {"events": bodies[index]}
            status, _, _ = post(
                connection,
                "/api/v1/events/batch/",
                token,
                payload,
                f"{key_prefix}-{index}",
            )
            with lock:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, statuses


def _wrk_counts(output: str) -> dict[str, int]:
    counts = {"built": 0, "created": 0, "other": 0}
    for match in re.finditer(r"built=(\d+) created=(\d+) other=(\d+)", output):
        counts["built"] += int(match.group(1))
        counts["created"] += int(match.group(2))
        counts["other"] += int(match.group(3))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", type=int, default=2, help="gunicorn worker processes."
    )
    parser.add_argument("--connections", type=int, default=8, help="wrk connections.")
    parser.add_argument(
        "--seconds", type=int, default=30, help="Seconds of each wrk measurement."
    )
    parser.add_argument(
        "--batches", type=int, default=40, help="Batches of 1,000 events to send."
    )
    parser.add_argument(
        "--clients", type=int, default=4, help="Concurrent batch clients."
    )
    parser.add_argument(
        "--rate",
        default=RATE,
        help="CRM_API_TOKEN_RATE for the server; an empty value turns the limit off.",
    )
    arguments = parser.parse_args()
    os.environ["DEBUG"] = "false"
    setup_django()
    from django.utils import timezone

    print(describe_machine())
    token, ids = prepare(5000)
    run = uuid.uuid4().hex[:8]
    single_prefix, batch_prefix = f"api-{run}", f"batch-{run}"
    # An hour ago in the program's time zone, so no event is in the future.
    occurred_at = (timezone.localtime() - dt.timedelta(hours=1)).isoformat(
        timespec="seconds"
    )
    rng = random.Random(9)
    bodies = [
        [
            event_body(rng.choice(ids), f"{batch_prefix}-{batch}-{number}", occurred_at)
            for number in range(1000)
        ]
        for batch in range(arguments.batches)
    ]

    with tempfile.TemporaryDirectory(prefix="api-load-") as folder:
        work = Path(folder)
        script = work / "events.lua"
        script.write_text(EVENT_SCRIPT)
        id_file = work / "ids.txt"
        id_file.write_text("\n".join(ids) + "\n")
        port = loadtools.free_port()
        log = Path(tempfile.gettempdir()) / "bench-api-load-gunicorn.log"
        server_env = {**os.environ, "CRM_API_TOKEN_RATE": arguments.rate}
        with loadtools.gunicorn(port, arguments.workers, server_env, log):
            base = f"http://{loadtools.HOST}:{port}"

            def measure(label: str, path: str, prefix: str) -> loadtools.WrkResult:
                result = loadtools.run_wrk(
                    base,
                    script=script,
                    connections=arguments.connections,
                    seconds=arguments.seconds,
                    env={
                        "BENCH_IDS": str(id_file),
                        "BENCH_PREFIX": prefix,
                        "BENCH_TOKEN": token,
                        "BENCH_OCCURRED_AT": occurred_at,
                        "BENCH_PATH": path,
                    },
                )
                print(
                    f"{label}: {result.rate:.1f} requests/s, {result.requests} "
                    f"requests, non-2xx {result.non_2xx}, errors {result.errors!r}, "
                    f"p50 {result.latency_p50_ms:.1f} ms, p99 "
                    f"{result.latency_p99_ms:.1f} ms, {_wrk_counts(result.output)}, "
                    f"load {load_average()}",
                    flush=True,
                )
                return result

            # Warm-up runs of both views, whose events are not counted.
            measure("warm-up, hello POST", "/bench/hello-post/", f"warm-{run}")
            measure("warm-up, single events", "/api/v1/events/", f"warm-{run}")
            hello = measure("hello POST, max rate", "/bench/hello-post/", single_prefix)
            single = measure(
                "single events, max rate", "/api/v1/events/", single_prefix
            )
            single_counts = _wrk_counts(single.output)
            # Requests still in flight when wrk stopped may be stored too.
            time.sleep(2)
            rows_after_wrk, _ = stored_references(single_prefix)
            replays = replay(port, token, single_prefix, ids, occurred_at, 200)
            rows_after_replay, distinct = stored_references(single_prefix)
            print(
                f"single events: wrk got 201 for {single_counts['created']} of "
                f"{single_counts['built']} requests built; the ledger holds "
                f"{rows_after_wrk} rows; replay: {replays}; after the "
                f"replay {rows_after_replay} rows, {distinct} distinct references",
                flush=True,
            )

            batch_seconds, statuses = send_batches(
                port, token, bodies, arguments.clients, batch_prefix
            )
            sent = sum(len(body) for body in bodies)
            print(
                f"batches: {len(bodies)} of 1,000 events from {arguments.clients} "
                f"clients in {batch_seconds:.1f} s, {sent / batch_seconds:,.0f} "
                f"events/s, statuses {statuses}, load {load_average()}",
                flush=True,
            )
            replay_seconds, replay_statuses = send_batches(
                port, token, bodies[:5], 1, batch_prefix
            )
            batch_rows, batch_distinct = stored_references(batch_prefix)
            print(
                f"batch replay of 5 with the same keys: {replay_statuses} in "
                f"{replay_seconds:.1f} s; the ledger holds {batch_rows} rows, "
                f"{batch_distinct} distinct references, of {sent} sent",
                flush=True,
            )

    print()
    print("| measurement | requests/s | events/s | p99 ms | ratio to hello |")
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| hello POST, max | {hello.rate:.1f} | — | {hello.latency_p99_ms:.1f} | 1.00 |"
    )
    print(
        f"| single events, max | {single.rate:.1f} | {single.rate:.1f} | "
        f"{single.latency_p99_ms:.1f} | {single.rate / hello.rate:.2f} |"
    )
    print(
        f"| batches of 1,000, {arguments.clients} clients | "
        f"{len(bodies) / batch_seconds:.2f} | {sent / batch_seconds:,.0f} | — | — |"
    )


if __name__ == "__main__":
    main()
