"""Streaming and server-sent events, and a stream that fails after its start."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.lowlevel
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from ..harness import Client, Env, check


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/numbers")
    def numbers() -> StreamingResponse:
        def chunks() -> Iterator[bytes]:
            for number in range(5):
                yield f"{number}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/events")
    async def events() -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            for number in range(3):
                await anyio.lowlevel.checkpoint()
                yield f"id: {number}\ndata: tick {number}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/breaks")
    async def breaks() -> StreamingResponse:
        async def stream() -> AsyncIterator[bytes]:
            yield b"first"
            raise RuntimeError("the stream breaks")

        return StreamingResponse(stream(), media_type="text/plain")

    return app


@check()
def a_streamed_body_arrives_whole(client: Client, env: Env) -> None:
    for _ in range(2):
        assert client.get("/numbers").text == "0\n1\n2\n3\n4\n"


@check()
def server_sent_events(client: Client, env: Env) -> None:
    for _ in range(2):
        response = client.get("/events")
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.text.count("data: tick") == 3


@check()
def a_stream_that_breaks_is_never_stored(client: Client, env: Env) -> None:
    for _ in range(2):
        # Starlette releases whose StreamingResponse runs in an anyio task group without
        # collapsing it (0.37, say) raise the error in an exception group of its own.
        with pytest.raises(Exception) as raised:
            client.get("/breaks")
        assert [repr(leaf) for leaf in _leaves(raised.value)] == [
            repr(RuntimeError("the stream breaks"))
        ]


def _leaves(error: BaseException) -> list[BaseException]:
    """The errors in ``error``, exception groups opened (``exceptiongroup`` before 3.11)."""
    inner = getattr(error, "exceptions", None)
    if not isinstance(inner, tuple):
        return [error]
    return [leaf for each in inner for leaf in _leaves(each)]
