"""The engine's checks (``test-engine/client/test.mjs``): what each response and the
origin's log must show. A failed check raises ``CheckFailed``; ``setup`` says whether the
case marks it as setup (the case then tested nothing)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .messages import NO_BODY_STATUSES, Case, Request, Response, fixup


class CheckFailed(Exception):
    def __init__(self, message: str, *, setup: bool) -> None:
        super().__init__(message)
        self.setup = setup


def check(setup: bool, condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message, setup=setup)


def is_setup(request: Request, member: str) -> bool:
    return request.get("setup") is True or member in request.get("setup_tests", ())


def check_response(case: Case, index: int, response: Response) -> None:
    """``checkResponse`` of the engine: type, status, headers and body of one response."""
    request, number = case["requests"][index], index + 1
    count = response.get("server-request-count")
    served_by = int(count) if count and count.isdigit() else None
    numbers = (response.get("request-numbers") or "").split()
    check(True, len(numbers) == len(set(numbers)), "retry")
    expected_type = request.get("expected_type")
    if expected_type == "cached" and not (response.status == 304 and served_by is None):
        check(
            is_setup(request, "expected_type"),
            served_by is not None and served_by < number,
            f"Response {number} does not come from cache",
        )
    if expected_type == "not_cached":
        check(
            is_setup(request, "expected_type"),
            served_by == number,
            f"Response {number} comes from cache",
        )
    check_status(request, number, response)
    check_headers(request, number, response)
    check_body(case, request, response)


def check_status(request: Request, number: int, response: Response) -> None:
    if "expected_status" in request:
        if request["expected_status"] is not None:
            check(
                is_setup(request, "expected_status"),
                response.status == request["expected_status"],
                f"Response {number} status is {response.status}, not {request['expected_status']}",
            )
    elif "response_status" in request:
        wanted = request["response_status"][0]
        check(True, response.status == wanted, f"Response {number} status is {response.status}")
    elif response.status == 999:
        check(
            is_setup(request, "expected_type"),
            False,
            f"Request {number} should have been conditional, but it was not.",
        )
    else:
        check(True, response.status == 200, f"Response {number} status is {response.status}")


def check_headers(request: Request, number: int, response: Response) -> None:
    setup = is_setup(request, "expected_response_headers")
    for header in request.get("expected_response_headers", ()):
        if isinstance(header, str):
            check(setup, response.has(header), f"Response {number} {header} header not present.")
            continue
        value = response.get(header[0])
        if len(header) > 2:
            check(setup, value is not None, f"Response {number} {header[0]} header not present.")
            if header[1] == "=":
                ok = value == response.get(header[2])
            else:  # ">"
                ok = value is not None and value.strip().isdigit() and int(value) > header[2]
            check(setup, ok, f"Response {number} header {header[0]} is {value}")
            continue
        server_now = float(response.get("server-now") or 0)
        expected = fixup(header, server_now, response.get("server-base-url") or "", request)
        check(setup, value == expected, f"Response {number} header {header[0]} is {value!r}")
    setup = is_setup(request, "expected_response_headers_missing")
    for header in request.get("expected_response_headers_missing", ()):
        # The engine only checks the name form (its (name, value) form never fires).
        if isinstance(header, str):
            check(setup, not response.has(header), f"Response {number} includes {header}")


def check_body(case: Case, request: Request, response: Response) -> None:
    text = response.body.decode("utf-8", "replace")
    if request.get("check_body") is False:
        return
    if "expected_response_text" in request:
        if request["expected_response_text"] is not None:
            wanted = request["expected_response_text"]
            check(is_setup(request, "expected_response_text"), text == wanted, f"body {text!r}")
    elif request.get("response_body") is not None:
        check(True, text == request["response_body"], f"Response body is {text!r}")
    elif response.status not in NO_BODY_STATUSES and request.get("request_method") != "HEAD":
        check(True, text == case["id"], f"Response body is {text!r}, not {case['id']!r}")


def check_server_requests(
    requests: Sequence[Request], responses: list[Response], state: list[dict[str, Any]]
) -> None:
    """``checkServerRequests``: what the origin saw, request by request."""
    seen = 0
    for index, request in enumerate(requests):
        number, response = index + 1, responses[index]
        setup = is_setup(request, "expected_type")
        expected_type = request.get("expected_type")
        if expected_type == "cached":
            continue  # the origin never saw it
        server = state[seen] if seen < len(state) else None
        if expected_type == "not_cached":
            ok = server is not None and server["request_num"] == number
            check(setup, ok, f"Response {number} comes from cache")
        validating = {"etag_validated": "if-none-match", "lm_validated": "if-modified-since"}
        if expected_type in validating:
            check(setup, server is not None, f"request {number} wasn't sent to server")
            assert server is not None
            name = validating[expected_type]
            check(setup, name in server["request_headers"], f"request {number} lacks {name}")
        seen += 1
        check_request_headers(request, number, server)
        if server is not None:
            for name, value in server["response_headers"]:
                received = response.get(name)
                check(True, received == value, f"Response {number} header {name} is {received!r}")
        if "expected_method" in request:
            method = server["request_method"] if server else None
            check(
                is_setup(request, "expected_method"),
                method == request["expected_method"],
                f"Request {number} had method {method}",
            )


def check_request_headers(request: Request, number: int, server: dict[str, Any] | None) -> None:
    received: Mapping[str, str] = server["request_headers"] if server else {}
    setup = is_setup(request, "expected_request_headers")
    for header in request.get("expected_request_headers", ()):
        if isinstance(header, str):
            check(setup, header.lower() in received, f"Request {number} {header} not present.")
        else:
            value = received.get(header[0].lower())
            check(setup, value == header[1], f"Request {number} header {header[0]} is {value!r}")
    setup = is_setup(request, "expected_request_headers_missing")
    for header in request.get("expected_request_headers_missing", ()):
        if isinstance(header, str):
            check(setup, header.lower() not in received, f"Request {number} {header} present.")
        else:
            value = received.get(header[0].lower())
            check(setup, value != header[1], f"Request {number} header {header[0]} is {value!r}")
