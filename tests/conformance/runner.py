"""Plays a conformance case through the cache in front of a scripted origin.

A port of the ``http-tests/cache-tests`` engine (``test-engine/client/test.mjs`` and
``server/handle-test.mjs``) to one process: the origin is an ASGI app answering each
request from the case's table, the client is a plain ASGI call, and time is a fake clock
(``pause_after`` advances it three seconds). The checks are the engine's: which requests
reached the origin (``Server-Request-Count``), statuses, headers both ways, bodies,
validators, and every origin header that must pass through unchanged.

An outcome is ``pass``, ``fail`` (a check failed), ``setup`` (a check the case marks as
setup failed, so the case tested nothing: the engine reports it as untested) or ``skip``
(a case it depends on did not pass, or it needs what an ASGI app cannot do).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi_tiered_cache import CacheSettings, TieredCache, TieredCacheMiddleware

from ..helpers import FakeClock
from .checks import CheckFailed, check_response, check_server_requests
from .messages import BASE_URL, NO_BODY_STATUSES, Case, Request, Response, fixup


@dataclass(frozen=True)
class Outcome:
    status: str  # pass | fail | setup | skip
    message: str = ""


@dataclass
class Origin:
    """The scripted server: answers request N of a case from its table, and records what
    it saw."""

    clock: FakeClock
    case_id: str
    requests: Sequence[Request]
    state: list[dict[str, Any]] = field(default_factory=list)
    sent: dict[int, dict[str, str]] = field(default_factory=dict)  # request number: headers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        server_num = len(self.state) + 1
        client_num = int(headers.get("req-num", "0") or 0)
        number = client_num or server_num
        config = self.requests[number - 1]
        now = self.clock()
        # The engine fixes up a config's dates in place when it answers it: the previous
        # request's validators are the values sent, or the raw ones if it was not sent.
        previous = {
            h[0].lower(): str(h[1])
            for h in (self.requests[number - 2] if number >= 2 else {}).get("response_headers", ())
        }
        previous.update(self.sent.get(number - 1, {}))
        status = self.status_for(config, previous, headers)
        base_url = BASE_URL + scope["path"]
        lines = [
            ("server-base-url", base_url),
            ("server-request-count", str(server_num)),
            ("client-request-count", str(client_num)),
            ("server-now", repr(now)),
        ]
        saved: dict[str, list[str]] = {}
        for header in config.get("response_headers", ()):
            value = fixup(header, now, base_url, config)
            lines.append((header[0].lower(), value))
            if len(header) < 3 or header[2] is True:
                saved.setdefault(header[0], []).append(value)
        self.sent[number] = dict(lines)
        if not any(name == "content-type" for name, _ in lines):
            lines.append(("content-type", "text/plain"))
        self.state.append(
            {
                "request_num": client_num,
                "request_method": scope["method"],
                "request_headers": headers,
                "response_headers": [(name, ", ".join(v)) for name, v in saved.items()],
            }
        )
        lines.append(("request-numbers", " ".join(str(s["request_num"]) for s in self.state)))
        body = b""
        if status not in NO_BODY_STATUSES:
            body = (config.get("response_body") or self.case_id).encode()
        declared = dict(lines).get("content-length", "")
        if declared.isdigit():
            body = body[: int(declared)]  # HTTP framing: the client reads that many bytes
        else:
            lines.append(("content-length", str(len(body))))
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in lines]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def status_for(config: Request, previous: Mapping[str, str], headers: Mapping[str, str]) -> int:
        """The configured status; for a request expected to be validated, 304 when its
        validator matches the previous response's, else 999 (the engine's marker)."""
        status = int(config.get("response_status", (200, "OK"))[0])
        if not str(config.get("expected_type", "")).endswith("validated"):
            return status
        last_modified, etag = previous.get("last-modified"), previous.get("etag")
        if last_modified and headers.get("if-modified-since") == last_modified:
            return 304
        if etag and headers.get("if-none-match") == etag:
            return 304
        return 999  # the server expected a conditional request


def settings_for(case: Case, base: Mapping[str, Any]) -> CacheSettings:
    """The case's settings; the scripted origin is a raw ASGI app whose routes the cache
    cannot see, so it opts in with a catch-all rule, as a user of such an app would."""
    options = {**base, **case.get("settings", {})}
    options["rules"] = [*options.get("rules", []), {"path": "/**"}]
    return CacheSettings(**options)


async def run_case(case: Case, settings: CacheSettings) -> Outcome:
    """Play one case against a new cache; never raises for a failed check."""
    if any("disconnect" in r or "interim_responses" in r for r in case["requests"]):
        return Outcome("skip", "needs a raw HTTP connection, not an ASGI call")
    clock = FakeClock()
    cache = TieredCache(settings, clock=clock, l1_timer=clock)
    origin = Origin(clock, case["id"], case["requests"])
    app = TieredCacheMiddleware(origin, cache=cache)
    responses: list[Response] = []
    try:
        for index, request in enumerate(case["requests"]):
            response = await send_request(app, case, index, responses)
            responses.append(response)
            check_response(case, index, response)
            if request.get("pause_after"):
                clock.advance(3)
                for _ in range(50):  # let background work (a stale-while-revalidate refresh) run
                    await asyncio.sleep(0)
        check_server_requests(case["requests"], responses, origin.state)
    except CheckFailed as failed:
        return Outcome("setup" if failed.setup else "fail", str(failed))
    finally:
        await cache.close()
    return Outcome("pass")


async def send_request(
    app: TieredCacheMiddleware, case: Case, index: int, responses: list[Response]
) -> Response:
    request = case["requests"][index]
    headers: list[tuple[str, str]] = [("pragma", "foo"), ("cache-control", "nothing-to-see-here")]
    for header in request.get("request_headers", ()):
        value = header[1]
        if request.get("magic_ims") and header[0].lower() == "if-modified-since":
            server_now = float(responses[-1].get("server-now") or 0)
            value = fixup(header, server_now, "", request)
        headers.append((header[0].lower(), str(value)))
    headers += [("host", "cache.test"), ("test-id", case["id"]), ("req-num", str(index + 1))]
    path = f"/test/{case['id']}" + (f"/{request['filename']}" if "filename" in request else "")
    body = str(request.get("request_body", "")).encode()
    if body:
        headers.append(("content-length", str(len(body))))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.get("request_method", "GET"),
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": str(request.get("query_arg", "")).encode(),
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("cache.test", 80),
    }
    messages: list[dict[str, Any]] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    lines = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in start["headers"]]
    content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return Response(start["status"], lines, content)


async def run_all(cases: Sequence[Case], base: Mapping[str, Any]) -> dict[str, Outcome]:
    """Run every case, then mark those whose dependencies did not pass as skipped, as the
    suite's report does."""
    results = {case["id"]: await run_case(case, settings_for(case, base)) for case in cases}
    changed = True
    while changed:
        changed = False
        for case in cases:
            if results[case["id"]].status == "skip":
                continue
            for dependency in case.get("depends_on", ()):
                found = results.get(dependency)
                if found is None or found.status != "pass":
                    why = "not ported" if found is None else found.status
                    results[case["id"]] = Outcome("skip", f"depends on {dependency} ({why})")
                    changed = True
                    break
    return results
