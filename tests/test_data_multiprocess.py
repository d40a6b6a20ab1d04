"""The data API across real processes sharing one redis-server (``tests/data_worker.py``).

Each worker uses the process's cache, ``get_cache()``, built from ``TIERED_CACHE_*``: L1
coherence after another process's ``set`` / ``delete``, and one computation of a cold key
across processes.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from .helpers import SECRET

ROOT = Path(__file__).resolve().parent.parent
COHERENCE_BOUND = 0.1  # seconds from a set or delete returning to another worker's L1 agreeing
ANSWER_TIMEOUT = 20.0  # seconds a worker may take to answer one command


class Worker:
    def __init__(self, redis_url: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERED_CACHE_")}
        env.update(
            TIERED_CACHE_REDIS_URL=redis_url,
            TIERED_CACHE_SECRET_KEY=SECRET,
            TIERED_CACHE_BUS_HEARTBEAT="0.2",
            TIERED_CACHE_REDIS_TIMEOUT="1.0",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.data_worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.read() == {"started": True}

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], ANSWER_TIMEOUT)
        assert ready, "the worker did not answer"
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def ask(self, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self.read()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def workers(redis_url: str) -> Iterator[tuple[Worker, Worker]]:
    started: list[Worker] = []
    try:
        for _ in range(2):
            started.append(Worker(redis_url))
        for worker in started:
            assert worker.ask(op="ready") == {"ok": True}
        yield started[0], started[1]
    finally:
        for worker in started:
            worker.stop()


def test_another_process_sees_a_set_and_a_delete_within_100_ms(
    workers: tuple[Worker, Worker],
) -> None:
    a, b = workers
    a.ask(op="set", key="k", value="v1")
    assert b.ask(op="get", key="k") == {"value": "v1"}  # now in b's L1 (for up to 30 s)

    # Each write starts once b has read its copy (b says what it read first, then polls).
    b.send(op="watch", key="k", until="v2", timeout=2.0)
    first_seen = b.read()["first"]
    written = a.ask(op="set", key="k", value="v2")["done_at"]
    watched = b.read()
    b.send(op="watch", key="k", until=None, timeout=2.0)
    then_seen = b.read()["first"]
    deleted = a.ask(op="delete", key="k")["done_at"]
    gone = b.read()

    assert first_seen == "v1" and then_seen == "v2"  # b was serving its copy
    assert watched["seen_at"] is not None and gone["seen_at"] is not None
    lags = (watched["seen_at"] - written, gone["seen_at"] - deleted)
    print(f"coherence lags: set {lags[0] * 1000:.1f} ms, delete {lags[1] * 1000:.1f} ms")
    assert max(lags) <= COHERENCE_BOUND


def test_a_cold_key_is_computed_once_across_processes(
    workers: tuple[Worker, Worker], redis_url: str
) -> None:
    a, b = workers
    a.send(op="load", key="cold", seconds=0.5, name="a")
    b.send(op="load", key="cold", seconds=0.5, name="b")
    answers = [a.read()["value"], b.read()["value"]]

    with redis.Redis.from_url(redis_url) as client:
        runs = int(client.get("runs:cold") or 0)
    assert runs == 1
    assert answers[0] == answers[1] in ("computed by a", "computed by b")
