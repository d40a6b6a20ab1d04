"""``FileResponse`` and ``StaticFiles``, ranges and conditional requests on them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import starlette
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ..harness import Client, Env, check

# FileResponse answers Range requests from Starlette 0.39 on; before, it sends the whole
# file (200), and with the cache it must do exactly the same.
RANGES = tuple(int(part) for part in starlette.__version__.split(".")[:2]) >= (0, 39)

_ROOT = Path(tempfile.mkdtemp(prefix="realapps-static-"))
(_ROOT / "hello.txt").write_text("hello, static world\n" * 50)
(_ROOT / "style.css").write_text("body { color: red }\n")


def create_app() -> FastAPI:
    app = FastAPI()
    app.mount("/static", StaticFiles(directory=_ROOT), name="static")

    @app.get("/download")
    def download() -> FileResponse:
        return FileResponse(_ROOT / "hello.txt", filename="hello.txt")

    return app


@check()
def static_files_and_file_responses(client: Client, env: Env) -> None:
    for _ in range(2):
        assert client.get("/static/style.css").text == "body { color: red }\n"
        download = client.get("/download")
        assert download.text.startswith("hello, static world")
        assert "attachment" in download.headers["content-disposition"]
        assert client.get("/static/missing.txt").status_code == 404


@check()
def ranges_and_validators_on_static_files(client: Client, env: Env) -> None:
    whole = (_ROOT / "hello.txt").read_bytes()
    first = client.get("/static/hello.txt", headers={"range": "bytes=0-4"})
    assert (first.status_code, first.content) == ((206, b"hello") if RANGES else (200, whole))
    again = client.get("/static/hello.txt", headers={"range": "bytes=7-12"})
    assert (again.status_code, again.content) == ((206, b"static") if RANGES else (200, whole))
    etag = client.get("/static/hello.txt").headers["etag"]
    assert client.get("/static/hello.txt", headers={"if-none-match": etag}).status_code == 304
