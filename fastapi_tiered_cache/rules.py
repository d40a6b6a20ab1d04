"""Per-route rules: path patterns compiled once, matched against the routed path.

Rules match ``scope["path"]`` (percent-decoded, what the router routes on), not the raw
path: otherwise ``/%61dmin`` would slip past a rule written for ``/admin``. The first
matching rule wins, in the order given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from .settings import RouteRule

__all__ = ["RuleSet", "compile_pattern"]

_TOKEN = re.compile(r"\*\*|\*|\{[^{}/]+\}")


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``*`` one segment, ``**`` any number of segments, ``{name}`` one non-empty segment,
    ``{name:path}`` the rest of the path."""
    parts, pos = [], 0
    for match in _TOKEN.finditer(pattern):
        parts.append(re.escape(pattern[pos : match.start()]))
        token = match.group()
        if token.endswith(":path}"):
            parts.append(f"(?P<{token[1:].split(':')[0]}>.*)")
        elif token == "**":
            parts.append(".*")
        elif token == "*":
            parts.append("[^/]*")
        else:
            parts.append(f"(?P<{token[1:-1]}>[^/]+)")
        pos = match.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


class RuleSet:
    """Ordered rules with their compiled patterns; ``match`` returns the first that applies."""

    def __init__(self, rules: Sequence[RouteRule]) -> None:
        self.rules = tuple(rules)
        self._compiled = tuple(
            (compile_pattern(rule.path) if rule.path is not None else None, rule)
            for rule in self.rules
        )

    def __bool__(self) -> bool:
        return bool(self.rules)

    def match(self, path: str, route_name: str = "") -> RouteRule | None:
        """The first rule whose path pattern matches ``path`` or that names ``route_name``."""
        for pattern, rule in self._compiled:
            if pattern is None:
                if route_name and rule.route == route_name:
                    return rule
            elif pattern.match(path):
                return rule
        return None
