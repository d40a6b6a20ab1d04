"""Exception handlers, ``HTTPException`` with headers, and an app that fails."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from ..harness import Client, Env, check


class TeapotError(Exception):
    pass


def create_app() -> FastAPI:
    app = FastAPI()

    @app.exception_handler(TeapotError)
    async def teapot(request: Request, exc: TeapotError) -> JSONResponse:
        return JSONResponse({"error": "teapot"}, status_code=418)

    @app.get("/teapot")
    def brew() -> None:
        raise TeapotError

    @app.get("/gone/{thing}")
    def gone(thing: str) -> None:
        raise HTTPException(410, f"{thing} is gone", headers={"x-reason": "removed"})

    @app.get("/crash")
    def crash() -> None:
        raise RuntimeError("the app fails")

    return app


@check()
def handlers_answer_the_same(client: Client, env: Env) -> None:
    for _ in range(2):
        response = client.get("/teapot")
        assert (response.status_code, response.json()) == (418, {"error": "teapot"})
        gone = client.get("/gone/widget")
        assert gone.status_code == 410 and gone.headers["x-reason"] == "removed"


@check()
def an_exception_reaches_the_test_as_without_the_cache(client: Client, env: Env) -> None:
    for _ in range(2):
        with pytest.raises(RuntimeError, match="the app fails"):
            client.get("/crash")
