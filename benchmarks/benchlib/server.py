"""``uvicorn benchlib.server:create --factory``: one variant, chosen by ``BENCH_SPEC`` (JSON).

The benchmark reads the origin call counter and our cache's outcome counters through a
side channel: a stdlib HTTP server on ``BENCH_CONTROL_PORT`` in a daemon thread, so that
these reads never pass through (or get counted by) the app under test.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .apps import Built, Spec, build, outcomes


def _control(built: Built, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/calls":
                body = str(built.origin_calls).encode()
            elif self.path == "/outcomes":
                body = json.dumps(outcomes(built.cache)).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="bench-control", daemon=True).start()


def create() -> Any:
    built = build(Spec.from_json(os.environ["BENCH_SPEC"]))
    port = os.environ.get("BENCH_CONTROL_PORT")
    if port:
        _control(built, int(port))
    return built.app
