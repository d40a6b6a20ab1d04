"""The delaying TCP proxy of ``tests/support/tcp_proxy.py``, in a process of its own.

A proxy in a thread of the benchmark process would compete with it for the GIL and add
noise to every request; in its own process it only adds what a network hop adds.
Run as a script: ``python proxy_proc.py TARGET_PORT DELAY_SECONDS`` prints its port, then
serves until it is terminated (by pid) or its stdin closes.
"""

from __future__ import annotations

import asyncio
import selectors
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _load_proxy_class():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from tcp_proxy import TcpProxy

    return TcpProxy


async def _serve(target_port: int, delay: float) -> None:
    proxy_cls = _load_proxy_class()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    async with proxy_cls(target_port) as proxy:
        if delay > 0:
            proxy.delay(delay)
        print(proxy.port, flush=True)
        await stop.wait()


class ProxyProcess:
    """Start ``proxy_proc.py`` for ``target_port`` adding ``rtt_ms`` of round trip."""

    def __init__(self, target_port: int, rtt_ms: float) -> None:
        self.target_port = target_port
        self.rtt_ms = rtt_ms
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> ProxyProcess:
        # delay mode delays each direction: a round trip costs twice the delay.
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(self.target_port), str(self.rtt_ms / 2000.0)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"proxy process did not start (said {line!r})")
        self.port = int(line)
        return self

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def _precise_loop() -> asyncio.AbstractEventLoop:
    # epoll/poll round timeouts up to whole milliseconds, which would turn a 0.5 ms delay
    # into 1 ms; select() takes microseconds. Fine for the few sockets of a proxy.
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


if __name__ == "__main__":
    loop = _precise_loop()
    try:
        loop.run_until_complete(_serve(int(sys.argv[1]), float(sys.argv[2])))
    finally:
        loop.close()
