"""The package's logger, and the start-up lines everybody needs to see.

Log records go to the ``fastapi_tiered_cache`` logger, configured by the application as
usual. The lines that say which tiers are active are the exception: under a server whose
default logging covers only its own loggers (uvicorn configures ``uvicorn.*`` and leaves
the root logger without a handler), an INFO record of ours would vanish, and a newcomer
would never learn that the cache runs without Redis. When nothing in the application
would show them, ``announce`` prints them on stderr in uvicorn's style instead.

A configuration error that nothing catches ends the process, as it should, but under a
server (``uvicorn app:app`` imports the app inside its own command) Python prints some 40
lines of the server's and importlib's frames above the one line that matters.
``brief_on_exit`` makes that one line all there is: the message, and where in the
application the error was raised. ``python -X dev`` shows the whole traceback again.
"""

from __future__ import annotations

import logging
import os
import sys
from types import TracebackType
from typing import Any

from .exceptions import ConfigurationError

__all__ = ["announce", "brief_on_exit", "logger"]

logger = logging.getLogger("fastapi_tiered_cache")
_fallback = logging.getLogger("fastapi_tiered_cache.startup")


def announce(message: str, *args: object) -> None:
    """Log a start-up line at INFO, visible even where the app configured no logging."""
    if logger.hasHandlers():
        logger.info(message, *args)
        return
    if not _fallback.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        _fallback.addHandler(handler)
        _fallback.setLevel(logging.INFO)
        _fallback.propagate = False
    _fallback.info(message, *args)


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def brief_on_exit(error: ConfigurationError) -> ConfigurationError:
    """Have ``error``, if nothing catches it, printed as one line instead of a traceback.

    Chains to the hook in place (any other exception is printed as before); installed once.
    Returns ``error``, for ``raise brief_on_exit(ConfigurationError(...))``.
    """
    previous = sys.excepthook
    if sys.flags.dev_mode or getattr(previous, "_tiered_cache", False):
        return error

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if not isinstance(value, ConfigurationError) or sys.flags.dev_mode:
            previous(kind, value, tb)
            return
        where = _raised_at(tb)
        print(f"{f'{where}: ' if where else ''}ConfigurationError: {value}", file=sys.stderr)

    hook._tiered_cache = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return error


def _raised_at(tb: TracebackType | None) -> str:
    """``file:line`` of the application's call into this package (``install(app)``)."""
    caller: Any = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if os.path.abspath(filename).startswith(_PACKAGE + os.sep):
            break
        if not filename.startswith("<"):
            caller = tb
        tb = tb.tb_next
    if caller is None:
        return ""
    filename = os.path.abspath(caller.tb_frame.f_code.co_filename)
    here = os.getcwd() + os.sep
    if filename.startswith(here):
        filename = filename[len(here) :]
    return f"{filename}:{caller.tb_lineno}"
