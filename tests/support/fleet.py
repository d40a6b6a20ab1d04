"""A fleet of real uvicorn processes behind one ``Host``, and the loads the fleet tests run.

``Fleet`` starts N processes of ``tests/fleet_app.py``, each on its own loopback port (as
behind a load balancer: every client sends the same ``Host``), sharing one cache Redis and
one data Redis. A process can be put behind a TCP proxy of its own (``ProxyProcess``, a
process, so it never competes with the load for the GIL) that blackholes its connections
to the cache's Redis on demand.

``race`` is the load of issue 21: readers hammer random processes every 1-6 ms while a
writer, rotating the writing process, sends back-to-back pairs of writes (PUT, PATCH,
POST, DELETE) 2-12 ms apart; ``RaceReport`` says which reads that started more than
``limit`` seconds after a completed write still returned an older version, and how long
each write took to become visible everywhere. ``stampede`` sends concurrent requests for
one cold key spread over the processes and returns how often the origin was called.

Every process is started with ``subprocess.Popen`` and stopped by its pid (SIGTERM, then
SIGKILL); nothing here depends on pytest. Run as ``python -m tests.support.fleet proxy
PORT`` it is the proxy process itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import redis

HOST = "127.0.0.1"
PUBLIC_HOST = "fleet.test"  # the Host every client sends, as behind a load balancer
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0  # seconds for every process to answer (32 processes on 2 cores)
KEEP_ALIVE = 120  # seconds uvicorn keeps an idle connection open (its default: 5)
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
WRITES = ("PUT", "PATCH", "POST", "DELETE")


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM ``proc`` by pid, wait, SIGKILL on timeout; its exit status (None if killed)."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
        return None


# --------------------------------------------------------------------------- the proxy


class ProxyProcess:
    """``tests/support/tcp_proxy.py``'s proxy to ``target_port``, in a process of its own.

    ``blackhole()`` / ``passthrough()`` return once the proxy has switched. Stopped by pid.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> ProxyProcess:
        command = [sys.executable, "-m", "tests.support.fleet", "proxy", str(self.target_port)]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.port = int(self._answer())
        return self

    def _answer(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            raise RuntimeError("the proxy process ended")
        return line

    def _command(self, mode: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(mode + "\n")
        self.proc.stdin.flush()
        if self._answer() != mode:
            raise RuntimeError(f"the proxy did not switch to {mode}")

    def blackhole(self) -> None:
        """Keep every connection open and deliver nothing, either way (a silent partition)."""
        self._command("blackhole")

    def passthrough(self) -> None:
        self._command("pass")

    def delay(self, seconds: float) -> None:
        """Add ``seconds`` to each direction of every connection (a slow network)."""
        self._command(f"delay {seconds}")

    def stop(self) -> None:
        if self.proc is not None:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            stop_process(self.proc)
            self.proc = None

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve_proxy(target_port: int) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from tcp_proxy import TcpProxy

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with TcpProxy(target_port) as proxy:
        print(proxy.port, flush=True)

        def command() -> None:
            line = sys.stdin.readline()
            if not line:
                stop.set()
                return
            mode = line.strip()
            if mode in ("pass", "blackhole"):
                proxy.set_mode(mode)  # new connections too are held open and fed nothing
            elif mode.startswith("delay "):
                proxy.delay(float(mode.split()[1]))
            print(mode, flush=True)

        loop.add_reader(sys.stdin.fileno(), command)
        await stop.wait()


# --------------------------------------------------------------------------- the fleet


class Fleet:
    """``size`` uvicorn processes of ``app``, one port each, sharing ``env``.

    - ``env``: the ``TIERED_CACHE_*`` variables (and ``FLEET_*`` ones) of every process.
    - ``proxied``: indexes of processes whose ``TIERED_CACHE_REDIS_URL`` is replaced by
      ``proxy_url`` (a proxy to the cache's Redis).
    """

    def __init__(
        self,
        size: int,
        env: Mapping[str, str],
        *,
        app: str = "tests.fleet_app:app",
        proxied: Mapping[int, str] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.size = size
        self.env = dict(env)
        self.app = app
        self.proxied = dict(proxied or {})
        self.start_timeout = start_timeout
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.pids: list[int] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://{HOST}:{port}" for port in self.ports]

    def _environ(self, index: int) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TIERED_CACHE_")}
        environ.update(self.env)
        if index in self.proxied:
            environ["TIERED_CACHE_REDIS_URL"] = self.proxied[index]
        return environ

    def start(self) -> Fleet:
        try:
            for index in range(self.size):
                port = free_port()
                # The loads open their connections before the burst; on a loaded machine
                # the first of them can idle past uvicorn's 5 s keep-alive, which closes
                # it as the burst's request arrives ("Server disconnected").
                # fmt: off
                command = [
                    sys.executable, "-m", "uvicorn", self.app, "--host", HOST,
                    "--port", str(port), "--log-level", "warning", "--no-access-log",
                    "--timeout-keep-alive", str(KEEP_ALIVE),
                ]
                # fmt: on
                self.procs.append(subprocess.Popen(command, cwd=ROOT, env=self._environ(index)))
                self.ports.append(port)
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        pending = set(range(self.size))
        pids: dict[int, int] = {}
        with httpx.Client(timeout=2.0, verify=False) as client:
            while pending:
                for index in sorted(pending):
                    proc = self.procs[index]
                    if proc.poll() is not None:
                        raise RuntimeError(f"process {index} exited with {proc.returncode}")
                    with contextlib.suppress(httpx.TransportError):
                        answer = client.get(self.urls[index] + "/healthz")
                        pids[index] = int(answer.json()["pid"])
                        pending.discard(index)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(pending)} of {self.size} processes not up")
                if pending:
                    time.sleep(0.05)
            self._hear_every_bus(client, deadline)
        self.pids = [pids[index] for index in range(self.size)]

    def _hear_every_bus(self, client: httpx.Client, deadline: float) -> None:
        """Wait (best effort, until ``deadline``) for every process's invalidation bus to
        be heard. Before that a process may miss a purge published as it subscribes, and
        holds its L1 entries only for the coherence bound, not the 100 ms that the race
        tests allow a healthy fleet; a loaded machine can take longer than the first
        reads to get there."""
        deaf = set(range(self.size))
        while deaf and time.monotonic() < deadline:
            for index in sorted(deaf):
                with contextlib.suppress(httpx.TransportError, ValueError):
                    if client.get(self.urls[index] + "/healthz").json().get("bus", True):
                        deaf.discard(index)
            if deaf:
                time.sleep(0.02)

    def stop(self) -> list[int | None]:
        """Stop every process (SIGTERM together, then SIGKILL what is left); exit statuses."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        statuses = [stop_process(proc) for proc in self.procs]
        self.procs = []
        return statuses

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def clients(fleet: Fleet, connections: int = 50) -> list[httpx.AsyncClient]:
    """One keep-alive client per process, each sending the public ``Host``."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return [
        httpx.AsyncClient(
            base_url=url,
            headers={"host": PUBLIC_HOST},
            timeout=10.0,
            limits=limits,
            verify=False,
        )
        for url in fleet.urls
    ]


# --------------------------------------------------------------------------- the race


@dataclass(frozen=True)
class Read:
    item: str
    process: int
    started: float  # monotonic seconds in the load's process
    ended: float
    version: int
    status: str  # the Cache-Status field


@dataclass(frozen=True)
class Write:
    item: str
    method: str
    process: int
    started: float
    completed: float
    version: int


@dataclass
class RaceReport:
    """What a ``race`` saw; ``limit`` is the staleness allowed after a completed write."""

    reads: list[Read] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    limit: float = 0.1
    errors: list[str] = field(default_factory=list)

    def stale(self) -> list[tuple[Read, Write]]:
        """Reads that started more than ``limit`` after a completed write, yet older."""
        found = []
        by_item: dict[str, list[Write]] = {}
        for write in self.writes:
            by_item.setdefault(write.item, []).append(write)
        for read in self.reads:
            for write in by_item.get(read.item, ()):
                if read.version < write.version and read.started > write.completed + self.limit:
                    found.append((read, write))
                    break
        return found

    def visibility(self) -> list[float]:
        """Per write: seconds from its completion to the start of the last read still
        older than it (0 when none); a write is visible everywhere after that."""
        seconds = []
        for write in self.writes:
            late = [
                read.started - write.completed
                for read in self.reads
                if read.item == write.item
                and read.version < write.version
                and read.started > write.completed
            ]
            seconds.append(max(late, default=0.0))
        return seconds

    def summary(self) -> dict[str, Any]:
        seconds = sorted(self.visibility())
        return {
            "reads": len(self.reads),
            "writes": len(self.writes),
            "stale_reads_beyond_limit": len(self.stale()),
            "visibility_ms": percentiles(seconds),
            "hits_by_tier": _tiers(self.reads),
            "errors": len(self.errors),
        }


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95 and max of ``seconds``, in milliseconds."""
    if not seconds:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p95": round(p95 * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


def _tiers(reads: Sequence[Read]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for read in reads:
        tier = "miss"
        if "; hit" in read.status:
            tier = "l1" if "detail=l1" in read.status else "l2"
        counts[tier] = counts.get(tier, 0) + 1
    return counts


async def race(
    fleet: Fleet,
    *,
    duration: float = 3.0,
    readers: int = 4,
    items: Sequence[str] = ("a", "b", "c"),
    writers: Sequence[int] | None = None,
    readable: Sequence[int] | None = None,
    pause: float = 0.1,
    limit: float = 0.1,
    seed: int = 21,
    during: Callable[[], Awaitable[None]] | None = None,
) -> RaceReport:
    """Readers on ``readable`` processes (default all; repeat one to favour it) and writes
    rotating over ``writers`` (default all) for ``duration`` seconds, while ``during``
    runs (a fault to inject); then one more second of reads alone."""
    plan = random.Random(seed)
    report = RaceReport(limit=limit)
    pool = clients(fleet)
    readable = list(readable if readable is not None else range(fleet.size))
    writers = list(writers if writers is not None else range(fleet.size))
    writing = asyncio.Event()
    writing.set()
    stop = asyncio.Event()

    async def read_loop(rng: random.Random) -> None:
        while not stop.is_set():
            index, item = rng.choice(readable), rng.choice(items)
            started = time.monotonic()
            try:
                response = await pool[index].get(f"/items/{item}")
            except httpx.HTTPError as exc:
                report.errors.append(f"GET {item} on {index}: {exc!r}")
                continue
            ended = time.monotonic()
            if response.status_code != 200:
                report.errors.append(f"GET {item} on {index}: {response.status_code}")
                continue
            version = int(response.json()["version"])
            status = response.headers.get("cache-status", "")
            report.reads.append(Read(item, index, started, ended, version, status))
            await asyncio.sleep(rng.uniform(0.001, 0.006))

    async def write(item: str, method: str, index: int) -> None:
        started = time.monotonic()
        try:
            response = await pool[index].request(method, f"/items/{item}")
        except httpx.HTTPError as exc:
            report.errors.append(f"{method} {item} on {index}: {exc!r}")
            return
        completed = time.monotonic()
        if response.status_code != 200:
            report.errors.append(f"{method} {item} on {index}: {response.status_code}")
            return
        version = int(response.json()["version"])
        report.writes.append(Write(item, method, index, started, completed, version))

    async def write_loop() -> None:
        turn = 0
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            item = plan.choice(items)
            for _ in range(2):  # a back-to-back pair, 2-12 ms apart
                await write(item, WRITES[turn % len(WRITES)], writers[turn % len(writers)])
                turn += 1
                await asyncio.sleep(plan.uniform(0.002, 0.012))
            await asyncio.sleep(pause)
        await asyncio.sleep(1.0)  # reads alone: every write must have become visible

    try:
        async with one_at_a_time("fleet-race"):
            tasks = [
                asyncio.create_task(read_loop(random.Random(seed * 100 + i)))
                for i in range(readers)
            ]
            if during is not None:
                await asyncio.gather(write_loop(), during())
            else:
                await write_loop()
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        for client in pool:
            await client.aclose()
    return report


@contextlib.asynccontextmanager
async def one_at_a_time(name: str) -> AsyncIterator[None]:
    """A machine-wide lock around a timed measurement: CI runs the Pythons' suites in
    parallel, and one suite's fleet under load must not be measured as another's lag
    (the 100 ms visibility bound is the product's, on a machine it does not share with
    more fleets of itself)."""
    path = Path(tempfile.gettempdir()) / f"fastapi-tiered-cache-{name}.lock"
    with path.open("a") as handle:
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- stampede


async def stampede(fleet: Fleet, item: str, requests: int = 200) -> list[httpx.Response]:
    """``requests`` concurrent GETs of ``/items/{item}``, spread evenly over the processes
    (connections opened beforehand, so they all reach the app at once)."""
    per = -(-requests // fleet.size)
    pool = clients(fleet, connections=per)
    try:
        # Open the connections first, so the burst is not serialised by TCP handshakes.
        await asyncio.gather(
            *(pool[i % fleet.size].get("/healthz") for i in range(per * fleet.size))
        )
        return await asyncio.gather(
            *(pool[i % fleet.size].get(f"/items/{item}") for i in range(requests))
        )
    finally:
        for client in pool:
            await client.aclose()


def origin_calls(data_url: str, item: str) -> int:
    """How often ``tests/fleet_app.py`` computed ``/items/{item}``."""
    with redis.Redis.from_url(data_url) as client:
        return int(client.get(f"fleet:calls:{item}") or 0)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "proxy":
        asyncio.run(_serve_proxy(int(sys.argv[2])))
    else:
        sys.exit("usage: python -m tests.support.fleet proxy TARGET_PORT")
