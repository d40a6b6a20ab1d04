"""Mounted sub-applications, routers with prefixes, ``url_for`` and websockets."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, WebSocket

from ..harness import Client, Env, check


def create_app() -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/v1", tags=["v1"])

    @router.get("/things/{name}")
    def thing(name: str) -> dict[str, str]:
        return {"thing": name}

    app.include_router(router)

    admin = FastAPI()

    @admin.get("/where")
    def where(request: Request) -> dict[str, str]:
        return {"url": str(request.url), "home": str(request.url_for("where"))}

    app.mount("/admin", admin)

    @app.get("/url")
    def url(request: Request) -> dict[str, str]:
        return {"url": str(request.url), "for": str(request.url_for("thing", name="x"))}

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(f"echo {text}")
        await websocket.close()

    return app


@check()
def routers_and_mounted_apps(client: Client, env: Env) -> None:
    for _ in range(2):
        assert client.get("/v1/things/a").json() == {"thing": "a"}
        assert client.get("/admin/where").json() == {
            "url": "http://testserver/admin/where",
            "home": "http://testserver/admin/where",
        }


@check()
def urls_built_by_the_app(client: Client, env: Env) -> None:
    for _ in range(2):
        assert client.get("/url?x=1").json() == {
            "url": "http://testserver/url?x=1",
            "for": "http://testserver/v1/things/x",
        }


@check(transports=("testclient",))
def websockets_pass_through(client: Client, env: Env) -> None:
    for word in ("a", "b"):
        with client.websocket_connect("/ws") as websocket:
            websocket.send_text(word)
            assert websocket.receive_text() == f"echo {word}"
