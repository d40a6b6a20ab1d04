"""The ``fastapi-tiered-cache`` console script.

Subcommands: ``config`` (effective settings, where each came from, secrets masked),
``check`` (validate the settings and reach Redis), ``routes APP`` (what the cache does for
each route of an app), ``stats`` (ask a running app's admin router), ``purge`` (invalidate
directly in Redis; running workers drop their L1 copies through the invalidation bus) and
``demo``. A user error is one line on stderr and a non-zero exit status: 2 for a usage or
configuration error, 1 when something could not be reached or done.

One module per command; ``parser`` declares them, ``connect`` reads the settings and
reaches Redis, ``output`` prints. None imports the FastAPI admin router: ``purge`` shares
the package's ``purge`` module with it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .check import command_check
from .config import command_config, setting_sources
from .errors import FAILURE, UserError
from .parser import build_parser
from .purge import command_purge
from .routes import command_routes
from .stats import command_stats

__all__ = ["main", "setting_sources"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "config": command_config,
    "check": command_check,
    "routes": command_routes,
    "stats": command_stats,
    "purge": command_purge,
}


def command_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from ..demo import main as demo_main

    return demo_main(extra, prog="fastapi-tiered-cache demo")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "demo":
            return command_demo(args, extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return FAILURE
