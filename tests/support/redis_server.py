"""Real ``redis-server`` processes for tests and benchmarks.

Every process we start:

* listens on ``127.0.0.1`` only, on a free port (bind to port 0, read it back, retry if
  ``redis-server`` then loses the race for it);
* lives in its own temporary directory, with persistence off (``--save "" --appendonly no``);
* is started with :class:`subprocess.Popen` and never daemonized, so we hold its pid;
* counts as up only once ``INFO server`` on its port answers with *our* pid (so a server of a
  parallel test run that grabbed the same port is never mistaken for ours);
* is stopped by pid (SIGTERM, wait, SIGKILL on timeout) and its directory removed.

Nothing here depends on pytest except :func:`require_redis_server`, which fixtures call.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
START_TIMEOUT = 15.0  # seconds for one process to answer after spawn
READY_TIMEOUT = 30.0  # seconds for a cluster / sentinel setup to converge
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
CLUSTER_SLOTS = 16384
_PORT_ATTEMPTS = 10

_S = TypeVar("_S", bound="RedisServer")
_C = TypeVar("_C", bound="RedisCluster")
_T = TypeVar("_T", bound="RedisSentinelSetup")


class RedisServerError(RuntimeError):
    """A redis-server process could not be started, or a setup did not converge."""


class _PortInUse(RedisServerError):
    pass


# --------------------------------------------------------------------------- helpers


def redis_server_binary() -> str | None:
    """Path of ``redis-server`` on PATH, or None."""
    return shutil.which("redis-server")


def in_ci() -> bool:
    """True when the CI environment variable is set (and not "", "0", "false" or "no")."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_redis_server() -> str:
    """Return the ``redis-server`` path; otherwise fail under CI, skip locally."""
    binary = redis_server_binary()
    if binary is None:
        msg = "redis-server not found on PATH; install Redis to run tests that need a real server"
        if in_ci():
            pytest.fail(f"{msg} (CI is set: this is an error, never a skip)", pytrace=False)
        pytest.skip(msg)
    return binary


def _binary() -> str:
    binary = redis_server_binary()
    if binary is None:
        raise RedisServerError("redis-server not found on PATH")
    return binary


@functools.lru_cache(maxsize=1)
def redis_server_version() -> tuple[int, int, int]:
    """Version of the ``redis-server`` on PATH, e.g. ``(7, 0, 15)``."""
    out = subprocess.run(
        [_binary(), "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        raise RedisServerError(f"cannot parse redis-server version from {out!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the caller must cope with losing a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def admin_client(port: int, *, timeout: float = 5.0) -> redis.Redis:
    """A sync client without retries, for admin commands. Use it as a context manager."""
    return redis.Redis(
        host=HOST,
        port=port,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until it is true; raise TimeoutError naming ``what`` otherwise.

    Redis and socket errors raised by the predicate count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


def parse_info(text: str | dict[str, Any]) -> dict[str, str]:
    """Parse ``INFO`` / ``CLUSTER INFO`` text (``key:value`` lines) into a dict of strings."""
    if isinstance(text, dict):
        return {str(key): str(value) for key, value in text.items()}
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and not key.startswith("#"):
            result[key] = value
    return result


def _as_dict(reply: Any) -> dict[str, str]:
    """A flat ``[k1, v1, k2, v2, ...]`` reply (or an already parsed dict) as a dict."""
    if isinstance(reply, dict):
        return {str(key): str(value) for key, value in reply.items()}
    items = list(reply)
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def _role(port: int) -> str | None:
    with admin_client(port, timeout=1.0) as client:
        return parse_info(client.execute_command("INFO", "replication")).get("role")


def _server_pid(port: int, timeout: float = 0.5) -> int | None:
    """``process_id`` from ``INFO server`` on ``port`` (raw RESP, no client), or None."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            buf = b""
            while b"\r\n" not in buf:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                buf += chunk
            header, _, body = buf.partition(b"\r\n")
            if not header.startswith(b"$"):  # e.g. -LOADING
                return None
            size = int(header[1:])
            while len(body) < size:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                body += chunk
    except (OSError, ValueError):
        return None
    match = re.search(rb"^process_id:(\d+)", body[:size], re.MULTILINE)
    return int(match.group(1)) if match else None


# Last-resort cleanup: processes still alive when the interpreter exits normally.
_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _terminate(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """Stop ``proc`` by pid: SIGCONT (in case it is paused), SIGTERM, wait, SIGKILL, wait."""
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
    finally:
        _LIVE.pop(proc.pid, None)


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE.values()):
        _terminate(proc, timeout=2.0)


# --------------------------------------------------------------------------- standalone


class RedisServer:
    """One ``redis-server`` on 127.0.0.1:<free port> in its own temp dir.

    The port is chosen at the first :meth:`start` and kept for the object's life, so
    :meth:`restart` (and a :meth:`start` after :meth:`stop`) comes back on the same port.
    """

    def __init__(
        self,
        *,
        extra_args: Sequence[str] = (),
        name: str = "redis",
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.name = name
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self._port: int | None = None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.name} port={self._port} {state}>"

    # -- properties
    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def dir(self) -> Path:
        if self._dir is None:
            raise RuntimeError(f"{self.name} has no directory (not started, or stopped)")
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    # -- lifecycle
    def start(self: _S) -> _S:
        """Start the server (no-op if running) and wait until it answers with our pid."""
        if self.running:
            return self
        binary = _binary()
        fresh = self._port is None
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        try:
            for attempt in range(1 if not fresh else _PORT_ATTEMPTS):
                if fresh:
                    self._allocate_ports()
                try:
                    self._spawn_and_wait(binary)
                except _PortInUse:
                    if not fresh or attempt == _PORT_ATTEMPTS - 1:
                        raise
                else:
                    return self
        except BaseException:
            if fresh:
                self._remove_dir()
                self._port = None
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the process by pid (SIGTERM, then SIGKILL) and remove the temp dir. Idempotent."""
        self._stop_process()
        self._remove_dir()

    def restart(self: _S) -> _S:
        """Stop the process and start a new one on the same port (and same directory)."""
        self._stop_process()
        return self.start()

    def kill(self) -> None:
        """SIGKILL the process (simulated crash); the directory is kept for :meth:`start`."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(STOP_TIMEOUT)
            _LIVE.pop(self._proc.pid, None)
            self._proc = None

    def pause(self) -> None:
        """SIGSTOP the process: connections stay open but nothing answers (a hung server)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused process."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- conveniences
    def client(self, *, timeout: float = 5.0) -> redis.Redis:
        """A sync admin client (decode_responses=True, no retries); close it after use."""
        return admin_client(self.port, timeout=timeout)

    def flushall(self) -> None:
        with self.client() as client:
            client.flushall()

    def log_tail(self, lines: int = 40, *, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(since)
                data = fh.read()
        except OSError as exc:
            return f"<no log: {exc}>"
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    # -- internals (overridden by cluster / sentinel nodes)
    def _allocate_ports(self) -> None:
        self._port = free_port()

    def _args(self) -> list[str]:
        args = [
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--protected-mode", "no",
        ]  # fmt: skip
        if redis_server_version() >= (7, 0, 0):
            args += ["--enable-debug-command", "local"]
        return args + self.extra_args

    def _spawn_and_wait(self, binary: str) -> None:
        port = self.port
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            proc = subprocess.Popen(
                [binary, *self._args()],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # terminal Ctrl-C goes to pytest, which stops us by pid
            )
        _LIVE[proc.pid] = proc
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = proc.poll()
            if code is not None:
                _LIVE.pop(proc.pid, None)
                tail = self.log_tail(since=offset)
                if "Address already in use" in tail:
                    raise _PortInUse(f"{self.name}: port {port} already in use\n{tail}")
                raise RedisServerError(
                    f"{self.name}: redis-server exited with code {code} while starting on port "
                    f"{port}.\n--- log tail ({self.log_path}) ---\n{tail}"
                )
            if _server_pid(port) == proc.pid:
                self._proc = proc
                return
            if time.monotonic() >= deadline:
                _terminate(proc)
                tail = self.log_tail(since=offset)
                raise RedisServerError(
                    f"{self.name}: redis-server (pid {proc.pid}) did not answer on port {port} "
                    f"within {self.start_timeout:.1f}s.\n--- log tail ({self.log_path}) ---\n{tail}"
                )
            time.sleep(0.02)

    def _stop_process(self) -> None:
        if self._proc is not None:
            _terminate(self._proc)
            self._proc = None

    def _remove_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# --------------------------------------------------------------------------- cluster


class _ClusterNode(RedisServer):
    def __init__(self, *, name: str, node_timeout_ms: int, start_timeout: float) -> None:
        super().__init__(name=name, start_timeout=start_timeout)
        self.node_timeout_ms = node_timeout_ms
        self.bus_port: int | None = None

    def _allocate_ports(self) -> None:
        if redis_server_version() >= (7, 0, 0):
            self._port = free_port()
            self.bus_port = free_port()
            while self.bus_port == self._port:
                self.bus_port = free_port()
            return
        for _ in range(200):  # Redis < 7: the bus port is always port + 10000
            port = free_port()
            if port + 10000 <= 65535 and _port_is_free(port + 10000):
                self._port, self.bus_port = port, port + 10000
                return
        raise RedisServerError("no free port pair (port, port + 10000) for a cluster node")

    def _args(self) -> list[str]:
        args = [
            *super()._args(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
        ]  # fmt: skip
        if redis_server_version() >= (7, 0, 0):
            args += ["--cluster-port", str(self.bus_port)]
        return args


class RedisCluster:
    """A Redis Cluster of ``masters`` (default 3) masters, slots split evenly, no replicas."""

    def __init__(
        self,
        masters: int = 3,
        *,
        node_timeout_ms: int = 2000,
        start_timeout: float = START_TIMEOUT,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.ready_timeout = ready_timeout
        self.nodes: list[RedisServer] = [
            _ClusterNode(
                name=f"cluster-{i}", node_timeout_ms=node_timeout_ms, start_timeout=start_timeout
            )
            for i in range(masters)
        ]

    def __repr__(self) -> str:
        return f"<RedisCluster {self.nodes!r}>"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def urls(self) -> list[str]:
        return [f"redis://{HOST}:{port}" for port in self.ports]

    @property
    def seed_url(self) -> str:
        return self.urls[0]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(HOST, port) for port in self.ports]

    def start(self: _C) -> _C:
        try:
            for node in self.nodes:
                node.start()
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flushall(self) -> None:
        for node in self.nodes:
            node.flushall()

    def __enter__(self: _C) -> _C:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def cluster_info(self, node: RedisServer) -> dict[str, str]:
        with node.client(timeout=1.0) as client:
            return parse_info(client.execute_command("CLUSTER", "INFO"))

    def _form(self) -> None:
        v7 = redis_server_version() >= (7, 0, 0)
        count = len(self.nodes)
        for i, node in enumerate(self.nodes):
            low, high = i * CLUSTER_SLOTS // count, (i + 1) * CLUSTER_SLOTS // count - 1
            with node.client() as client:
                if v7:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
                else:
                    client.execute_command("CLUSTER", "ADDSLOTS", *range(low, high + 1))
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        with self.nodes[0].client() as client:
            for other in self.nodes[1:]:
                bus = [other.bus_port] if v7 and isinstance(other, _ClusterNode) else []
                client.execute_command("CLUSTER", "MEET", HOST, other.port, *bus)

        def converged() -> bool:
            for node in self.nodes:
                info = self.cluster_info(node)
                if (
                    info.get("cluster_state") != "ok"
                    or info.get("cluster_slots_ok") != str(CLUSTER_SLOTS)
                    or info.get("cluster_known_nodes") != str(count)
                ):
                    return False
            return True

        try:
            wait_until(converged, timeout=self.ready_timeout, what="cluster_state:ok on all nodes")
        except TimeoutError as exc:
            states = []
            for node in self.nodes:
                try:
                    states.append(f"{node.name}: {self.cluster_info(node)}")
                except (redis.RedisError, OSError) as err:
                    states.append(f"{node.name}: {err!r}")
            raise RedisServerError(f"{exc}\n" + "\n".join(states)) from exc


# --------------------------------------------------------------------------- sentinel


class _SentinelNode(RedisServer):
    def __init__(self, setup: RedisSentinelSetup, *, start_timeout: float) -> None:
        super().__init__(name="sentinel", start_timeout=start_timeout)
        self.setup = setup
        self._conf_port: int | None = None

    @property
    def conf_path(self) -> Path:
        return self.dir / "sentinel.conf"

    def _args(self) -> list[str]:
        # Written once per port; on restart we keep the file the sentinel has rewritten.
        if self._conf_port != self.port or not self.conf_path.exists():
            setup, name = self.setup, self.setup.service_name
            self.conf_path.write_text(
                f"port {self.port}\n"
                f"bind {HOST}\n"
                "protected-mode no\n"
                "daemonize no\n"
                f'dir "{self.dir}"\n'
                f"sentinel monitor {name} {HOST} {setup.data_nodes[0].port} 1\n"
                f"sentinel down-after-milliseconds {name} {setup.down_after_ms}\n"
                f"sentinel failover-timeout {name} {setup.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
            self._conf_port = self.port
        return [str(self.conf_path), "--sentinel"]


_FAST_SYNC = ("--repl-diskless-sync-delay", "0")  # the default 5 s delays every full sync


class RedisSentinelSetup:
    """One master, one replica (``--replicaof``) and one sentinel monitoring ``service_name``.

    ``master_port`` / ``master`` / ``replica`` are resolved live from the sentinel, so they
    stay right after :meth:`failover` or an automatic failover (e.g. ``setup.master.kill()``).
    Note: a data node restarted after a failover comes back with its original command line
    (the first one as a master, the second as ``--replicaof`` the first).
    """

    def __init__(
        self,
        service_name: str = "mymaster",
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        start_timeout: float = START_TIMEOUT,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.service_name = service_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.ready_timeout = ready_timeout
        self.data_nodes: list[RedisServer] = [
            RedisServer(name=f"sentinel-{role}", extra_args=_FAST_SYNC, start_timeout=start_timeout)
            for role in ("master", "replica")
        ]
        self.sentinel: RedisServer = _SentinelNode(self, start_timeout=start_timeout)

    def __repr__(self) -> str:
        return f"<RedisSentinelSetup {self.service_name} {self.data_nodes!r} {self.sentinel!r}>"

    @property
    def sentinel_port(self) -> int:
        return self.sentinel.port

    @property
    def sentinel_url(self) -> str:
        return f"redis://{HOST}:{self.sentinel.port}"

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """``[(host, port)]``, as ``redis.asyncio.sentinel.Sentinel`` wants them."""
        return [(HOST, self.sentinel.port)]

    @property
    def master_port(self) -> int:
        """The master's port as the sentinel currently reports it."""
        with self.sentinel.client(timeout=2.0) as client:
            reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        if not reply:
            raise RedisServerError(f"sentinel does not know {self.service_name!r}")
        return int(reply[1])

    @property
    def master(self) -> RedisServer:
        port = self.master_port
        return next(node for node in self.data_nodes if node.port == port)

    @property
    def replica(self) -> RedisServer:
        port = self.master_port
        return next(node for node in self.data_nodes if node.port != port)

    def start(self: _T) -> _T:
        master, replica = self.data_nodes
        try:
            master.start()
            replica.extra_args = [*_FAST_SYNC, "--replicaof", HOST, str(master.port)]
            replica.start()
            wait_until(
                lambda: self._replication(replica).get("master_link_status") == "up",
                timeout=self.ready_timeout,
                what=f"replica on port {replica.port} to sync with master on {master.port}",
            )
            self.sentinel.start()
            wait_until(
                lambda: self._sentinel_sees(master_port=master.port, replica_port=replica.port),
                timeout=self.ready_timeout,
                what="the sentinel to see a healthy master and replica",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.sentinel.stop()  # first, so it does not react to the data nodes going away
        for node in reversed(self.data_nodes):
            node.stop()

    def flushall(self) -> None:
        self.master.flushall()

    def failover(
        self, *, timeout: float = 30.0, sync_replica: bool = True, wait_for_demotion: bool = False
    ) -> int:
        """``SENTINEL FAILOVER``, then wait until the sentinel reports the former replica as
        master and that node reports ``role:master``. Returns the new master's port.

        ``sync_replica`` first runs ``WAIT 1`` on the master, so writes made before the call
        survive (a sentinel failover itself does not wait for the replica to catch up).
        With ``wait_for_demotion`` also wait until the former master has been turned into a
        replica (the sentinel only does that ~8-10 s later; until then it still accepts writes).
        """
        deadline = time.monotonic() + timeout
        old_port = self.master_port
        new = self.replica
        if sync_replica:
            with admin_client(old_port) as client:
                client.execute_command("WAIT", 1, int(timeout * 1000 / 2))
        with self.sentinel.client() as client:
            while True:
                try:
                    client.execute_command("SENTINEL", "FAILOVER", self.service_name)
                    break
                except redis.ResponseError as exc:
                    if "INPROG" in str(exc):  # someone else's failover: just wait for it
                        break
                    if "NOGOODSLAVE" not in str(exc) or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.1)
        wait_until(
            lambda: self._settled_on(new.port),
            timeout=max(deadline - time.monotonic(), 0.1),
            what=f"sentinel to report port {new.port} (was {old_port}) as master",
        )
        if wait_for_demotion:
            wait_until(
                lambda: _role(old_port) == "slave",
                timeout=max(deadline - time.monotonic(), 0.1),
                what=f"former master on port {old_port} to become a replica",
            )
        return new.port

    def wait_for_master(self, port: int, *, timeout: float = 30.0) -> None:
        """Wait until a failover (e.g. automatic after ``setup.master.kill()``) settles on
        ``port``."""
        wait_until(
            lambda: self._settled_on(port), timeout=timeout, what=f"port {port} to be master"
        )

    def __enter__(self: _T) -> _T:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals
    @staticmethod
    def _replication(node: RedisServer) -> dict[str, str]:
        with node.client(timeout=1.0) as client:
            return parse_info(client.execute_command("INFO", "replication"))

    def _sentinel_sees(self, *, master_port: int, replica_port: int) -> bool:
        with self.sentinel.client(timeout=1.0) as client:
            master = _as_dict(client.execute_command("SENTINEL", "MASTER", self.service_name))
            replicas = [
                _as_dict(r)
                for r in client.execute_command("SENTINEL", "REPLICAS", self.service_name)
            ]
        return (
            master.get("port") == str(master_port)
            and master.get("flags") == "master"
            and any(
                r.get("port") == str(replica_port)
                and r.get("flags") == "slave"
                and r.get("master-link-status") == "ok"
                for r in replicas
            )
        )

    def _settled_on(self, port: int) -> bool:
        with self.sentinel.client(timeout=1.0) as client:
            addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
            master = _as_dict(client.execute_command("SENTINEL", "MASTER", self.service_name))
        return (
            bool(addr)
            and int(addr[1]) == port
            and master.get("flags") == "master"  # no failover_in_progress / s_down / o_down
            and _role(port) == "master"
        )
