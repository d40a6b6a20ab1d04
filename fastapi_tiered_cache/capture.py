"""The ``send`` wrapper of one origin response: forward each message to the client at once,
tee a copy of the body, and judge at ``http.response.start`` whether it may be stored.

The ``http.response.start`` message is held back until the first body message: when the
whole body arrives in one message (as it does for every ordinary ``Response``) the ETag
can still be added to the headers. What the copy becomes is ``new_entry``; storing it,
once the last byte was handed to the server, is ``storing``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import Message, Receive, Send

from .cache_control import EMPTY
from .entry import CachedResponse
from .new_entry import build_entry, freshened_entry
from .policy import Reason, check_response, response_cache_control
from .replay import with_cache_control
from .storing import store_fill

if TYPE_CHECKING:
    from .origin import Fetch

__all__ = ["Capture"]


class Capture:
    """The ``send`` wrapper of one origin response: forward, tee, then decide and store."""

    def __init__(self, fetch: Fetch, send: Send, stale: CachedResponse | None) -> None:
        self.fetch = fetch
        self.cache = fetch.cache
        self.client_send = send
        self.stale = stale
        self.start: Message | None = None
        self.started = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.storable = False
        self.reason = Reason.CACHEABLE
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.record: CachedResponse | None = None
        self.not_modified = False
        self.cc = EMPTY
        self.suppressed = False  # a 5xx held back: the stale fallback answers instead
        self.stored: CachedResponse | None = None
        self.request_body = False  # the request had a body after all (HTTP/2 needs no length)

    def watch(self, receive: Receive) -> Receive:
        """``receive``, noting a request body: the key does not cover one, and HTTP/2 can
        send it without ``Content-Length``, so a request that had one stores nothing."""

        async def watched() -> Message:
            message = await receive()
            if message["type"] == "http.request" and message.get("body"):
                self.request_body, self.storable = True, False
                self.reason = Reason.REQUEST_BODY
            return message

        return watched

    async def send_held_start(self) -> None:
        """The app sent its start and then raised before any body: the client gets that
        start (then a broken body), exactly as without the cache, not the server's 500."""
        if self.start is None or self.started or self.suppressed or self.not_modified:
            return
        self.started, self.storable = True, False
        await self.client_send(self.outgoing_start())

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.suppressed:
            return
        if kind == "http.response.start":
            self.on_start(message)
            if self.fetch.fallback is not None and self.status >= 500:
                self.suppressed = True
                return
            if self.not_modified:
                return
            if message.get("trailers"):
                self.storable = False
        elif kind == "http.response.body":
            if self.not_modified:
                self.complete = self.complete or not message.get("more_body", False)
                return
            await self.on_body(message)
        else:
            if self.start is not None and not self.started:
                # A body the cache cannot see (a server extension): start first, store
                # nothing. Before the start (``http.response.debug``) nothing is held.
                self.reason = Reason.BODY_EXTENSION
                await self.send_held_start()
            await self.client_send(message)

    def on_start(self, message: Message) -> None:
        self.status = message["status"]
        headers: dict[str, str] = {}
        for raw_name, raw_value in message.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        self.start = message
        if self.stale is not None and self.status == 304:
            self.not_modified = True
            return
        self.reason = self.judge()
        self.storable = self.reason is Reason.CACHEABLE

    def judge(self) -> Reason:
        fetch = self.fetch
        if self.request_body:
            return Reason.REQUEST_BODY
        if fetch.info.method == "HEAD":
            return Reason.METHOD  # a HEAD response has no body to replay for a GET
        settings = self.cache.settings
        statuses = fetch.rule.statuses if fetch.rule and fetch.rule.statuses else None
        self.cc = response_cache_control(self.headers, settings.targeted_headers)
        decision = check_response(
            self.status,
            self.headers,
            cc=self.cc,
            request_cc=fetch.request_cc,
            statuses=statuses or self.cache.statuses,
            shared=fetch.identity.is_anonymous or not fetch.private_ok,
            strict=settings.is_strict,
            heuristic=settings.uses_heuristic,
            authorization="authorization" in fetch.info.headers,
        )
        if not decision.cacheable:
            return decision.reason
        length = self.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > self.cache.settings.max_body_bytes:
            return Reason.TOO_LARGE
        return Reason.CACHEABLE

    async def on_body(self, message: Message) -> None:
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        if self.storable:
            self.size += len(body)
            if self.size > self.cache.settings.max_body_bytes:
                self.storable, self.reason, self.chunks = False, Reason.TOO_LARGE, []
            else:
                self.chunks.append(body)
        if not self.started:
            self.started = True
            if self.storable and not more:
                self.record = self.build_record()
            await self.client_send(self.outgoing_start())
        await self.client_send(message)
        if not more:
            self.complete = True

    def outgoing_start(self) -> Message:
        assert self.start is not None
        params = [f"fwd={self.fetch.forward}"]
        if self.stale is not None:
            params.append(f"fwd-status={self.status}")
        if self.record is not None:
            params.append("stored")
        elif not self.storable:
            params.append(f"detail={self.reason}")
        x_cache = "MISS"
        headers = list(self.start.get("headers", ()))
        hidden = self.cache.hidden_headers
        if hidden:
            headers = [(k, v) for k, v in headers if k.lower() not in hidden]
        rule = self.fetch.rule
        if self.record is not None and rule is not None and rule.cache_control:
            now = self.cache.clock()
            headers = with_cache_control(headers, rule.cache_control, self.record.ttl(now), now)
        if self.record is not None and not self.record.etag:
            headers.append((b"etag", self.record.served_etag))
        headers.extend(self.fetch.responder.marks(x_cache, *params))
        return {**self.start, "headers": headers}

    async def finish(self) -> None:
        """After the app returned: store what may be stored, or replay a revalidated entry."""
        if self.not_modified and self.stale is not None:
            await self.store_and_replay_revalidated(self.stale)
            return
        if not (self.complete and self.storable):
            return
        record = self.record or self.build_record()
        if record is not None:
            await self.store(record)

    def build_record(self) -> CachedResponse | None:
        """The entry the captured response becomes, or None (then says why not)."""
        assert self.start is not None
        built = build_entry(
            self.fetch,
            self.status,
            self.headers,
            self.cc,
            self.start.get("headers", ()),
            self.chunks,
        )
        if isinstance(built, Reason):
            self.storable, self.reason = False, built
            return None
        return built

    async def store(self, record: CachedResponse) -> None:
        """Store after the last byte (see ``storing``); a request that had a body stores
        nothing, as its key does not cover the body."""
        if not self.request_body and await store_fill(self.fetch, record):
            self.stored = record  # what waiters on this fill are answered with

    async def store_and_replay_revalidated(self, stale: CachedResponse) -> None:
        """A 304 from the origin: freshen the stored entry (RFC 9111 §4.3.4) and serve it."""
        fetch = self.fetch
        assert self.start is not None
        record = freshened_entry(self.cache, stale, self.start.get("headers", ()))
        params = ("fwd=stale", "fwd-status=304", "stored")
        self.stored = record
        await fetch.responder.replay(
            fetch.info, record, None, self.client_send, x_cache="REVALIDATED", params=params
        )
        await self.store(record)
