"""Load-test helpers: gunicorn on loopback, wrk runs, a constant-rate generator.

wrk (Debian package ``wrk`` 4.1) measures the maximum rate: each of its
connections sends the next request as soon as the previous response
arrives. Debian has neither wrk2 nor vegeta, so ``constant_rate`` sends
requests on a fixed schedule from Python asyncio instead, and measures each
latency from the moment the schedule meant to send the request. A server
that falls behind therefore shows the queueing in the latency, instead of
slowing the sender down (coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Return a TCP port on the loopback address that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def gunicorn(
    port: int, workers: int, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run gunicorn with bench.settings on HOST:port until the block ends.

    Raises RuntimeError when the server does not accept connections within 60
    seconds.
    """
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "crm.wsgi:application",
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(workers),
        "--access-logfile",
        "-" if os.environ.get("BENCH_ACCESS_LOG") else "/dev/null",
        "--error-logfile",
        str(log),
    ]
    server_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.settings", "DEBUG": "false"}
    with log.open("ab") as output:
        # The command is gunicorn from this project's virtualenv.
        process = subprocess.Popen(  # noqa: S603
            command, cwd=ROOT, env=server_env, stdout=output, stderr=output
        )
    try:
        _wait_until_listening(port, process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with code {process.returncode}.")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 1):
            # The master listens before its workers load Django; give them time.
            time.sleep(3)
            return
        time.sleep(0.5)
    raise RuntimeError(f"gunicorn did not listen on {HOST}:{port} within 60 s.")


@dataclass
class WrkResult:
    """The figures of one wrk run."""

    requests: int
    seconds: float
    rate: float
    non_2xx: int
    errors: str
    latency_p50_ms: float
    latency_p99_ms: float
    output: str


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    factor = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]
    return float(value) * factor


def run_wrk(
    url: str,
    *,
    script: Path,
    connections: int,
    seconds: int,
    threads: int = 1,
    env: dict[str, str] | None = None,
) -> WrkResult:
    """Run wrk with a Lua script against ``url``; return its figures.

    Raises RuntimeError when wrk fails or its output has no request rate.
    """
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    # The command is wrk with arguments built here.
    completed = subprocess.run(  # noqa: S603
        command,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    output = completed.stdout + completed.stderr
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(s|m)", output)
    if completed.returncode != 0 or rate is None or total is None:
        raise RuntimeError(f"wrk failed with code {completed.returncode}:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    p50 = re.search(r"\s50%\s+(\S+)", output)
    p99 = re.search(r"\s99%\s+(\S+)", output)
    duration = float(total.group(2)) * (60 if total.group(3) == "m" else 1)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=duration,
        rate=float(rate.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=errors.group(1) if errors else "",
        latency_p50_ms=_milliseconds(p50.group(1)) if p50 else float("nan"),
        latency_p99_ms=_milliseconds(p99.group(1)) if p99 else float("nan"),
        output=output,
    )


@dataclass
class RateResult:
    """The figures of one constant-rate run, with latencies in milliseconds."""

    target_rate: float
    sent: int
    seconds: float
    statuses: dict[int, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response; return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _constant_rate(
    port: int, paths: list[str], rate: float, seconds: float, connections: int
) -> RateResult:
    queue: asyncio.Queue[tuple[float, str] | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def client() -> None:
        # gunicorn's sync workers close the connection after each response,
        # so every request opens a connection of its own.
        while (item := await queue.get()) is not None:
            intended, path = item
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                status = await _read_response(reader)
            finally:
                writer.close()
            latencies.append(time.perf_counter() - intended)
            statuses[status] = statuses.get(status, 0) + 1

    clients = [asyncio.create_task(client()) for _ in range(connections)]
    started = time.perf_counter()
    total = int(rate * seconds)
    for number in range(total):
        intended = started + number / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((intended, paths[number % len(paths)]))
    for _ in clients:
        queue.put_nowait(None)
    await asyncio.gather(*clients)
    elapsed = time.perf_counter() - started
    ordered = sorted(latency * 1000 for latency in latencies)
    return RateResult(
        target_rate=rate,
        sent=total,
        seconds=elapsed,
        statuses=statuses,
        p50_ms=_percentile(ordered, 0.50),
        p90_ms=_percentile(ordered, 0.90),
        p99_ms=_percentile(ordered, 0.99),
        max_ms=ordered[-1],
    )


def constant_rate(
    port: int, paths: list[str], rate: float, seconds: float, connections: int = 32
) -> RateResult:
    """Send GET requests for ``paths`` in turn at ``rate`` per second for ``seconds``.

    ``connections`` clients share the schedule, each with one request open
    at a time. A request waits in the queue while all of them are busy, and
    that wait counts in its latency.
    """
    return asyncio.run(_constant_rate(port, paths, rate, seconds, connections))
