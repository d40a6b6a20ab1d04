"""How the console script fails: one line on stderr and an exit status, 2 for a usage or
configuration error, 1 when something could not be reached or done."""

from __future__ import annotations

__all__ = ["FAILURE", "USAGE", "UserError"]

USAGE, FAILURE = 2, 1  # exit statuses


class UserError(Exception):
    """A problem the user can fix, reported as one line; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = FAILURE) -> None:
        super().__init__(" ".join(message.split()))
        self.status = status
