"""Dependencies with ``yield``, ``dependency_overrides``, ``BackgroundTasks``, headers,
cookies and credentials: what a hit skips, and what must never be shared."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import BackgroundTasks, Cookie, Depends, FastAPI, Header, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..harness import Client, Env, check

USERS = {"token-a": "alice", "token-b": "bob"}


def create_app() -> FastAPI:
    app = FastAPI()
    app.state.events = []
    app.state.sent = []
    bearer = HTTPBearer(auto_error=False)

    def session() -> Iterator[str]:
        app.state.events.append("open")
        try:
            yield "session"
        finally:
            app.state.events.append("close")

    def current_user(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        if credentials is None or credentials.credentials not in USERS:
            raise HTTPException(401, "who are you?", headers={"www-authenticate": "Bearer"})
        return USERS[credentials.credentials]

    def settings_value() -> str:
        return "real"

    app.state.settings_value = settings_value

    @app.get("/with-session")
    def with_session(db: Annotated[str, Depends(session)]) -> dict[str, str]:
        return {"db": db}

    @app.get("/me")
    def me(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
        return {"user": user}

    @app.get("/setting")
    def setting(value: Annotated[str, Depends(settings_value)]) -> dict[str, str]:
        return {"value": value}

    @app.get("/notify")
    def notify(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(app.state.sent.append, "mail")
        return {"queued": True}

    @app.get("/lang")
    def lang(accept_language: Annotated[str | None, Header()] = None) -> dict[str, str | None]:
        return {"lang": accept_language}

    @app.get("/theme")
    def theme(theme: Annotated[str | None, Cookie()] = None) -> dict[str, str | None]:
        return {"theme": theme}

    return app


@check()
def each_user_gets_their_own_answer(client: Client, env: Env) -> None:
    for _ in range(2):
        assert client.get("/me", headers={"authorization": "Bearer token-a"}).json() == {
            "user": "alice"
        }
        assert client.get("/me", headers={"authorization": "Bearer token-b"}).json() == {
            "user": "bob"
        }
        assert client.get("/me").status_code == 401
        assert client.get("/me", headers={"authorization": "Bearer nope"}).status_code == 401


@check()
def headers_and_cookies_the_route_reads_are_part_of_the_answer(client: Client, env: Env) -> None:
    for _ in range(2):
        assert client.get("/lang", headers={"accept-language": "fr"}).json() == {"lang": "fr"}
        assert client.get("/lang", headers={"accept-language": "de"}).json() == {"lang": "de"}
        assert client.get("/lang").json() == {"lang": None}
        dark = client.get("/theme", headers={"cookie": "theme=dark"})
        assert dark.json() == {"theme": "dark"}
        light = client.get("/theme", headers={"cookie": "theme=light; other=1"})
        assert light.json() == {"theme": "light"}


@check(counts_origin=True)
def a_yield_dependency_runs_on_misses_only(client: Client, env: Env) -> None:
    for _ in range(3):
        assert client.get("/with-session").json() == {"db": "session"}
    expected = ["open", "close"] * (1 if env.cached else 3)
    assert client.app.state.events == expected


@check(counts_origin=True)
def background_tasks_run_on_misses_only(client: Client, env: Env) -> None:
    statuses = []
    for _ in range(2):
        answer = client.get("/notify")
        assert answer.json() == {"queued": True}
        statuses.append(answer.headers.get("cache-status"))
    assert client.app.state.sent == ["mail"] * (1 if env.cached else 2), statuses


@check()
def dependency_overrides_changed_between_requests(client: Client, env: Env) -> None:
    app = client.app
    app.dependency_overrides[app.state.settings_value] = lambda: "override"
    assert client.get("/setting").json() == {"value": "override"}
    app.dependency_overrides.clear()
    assert client.get("/setting").json() == {"value": "real"}
