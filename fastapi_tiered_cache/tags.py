"""Tags (surrogate keys) declared by rules, filled from path parameters.

``product:{product_id}`` on a rule for ``/products/{product_id}`` gives ``product:42`` for
``/products/42``. Parameters come from the router when it ran (``scope["path_params"]``),
or from the rule's own pattern otherwise (for example when a write is purged).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .rules import compile_pattern
from .settings import RouteRule

__all__ = ["fill_tags", "rule_params"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^{}]*)?\}")


def fill_tags(templates: Iterable[str], params: Mapping[str, Any]) -> list[str]:
    """Fill each template; a template naming a parameter we do not have is skipped."""
    tags = []
    for template in templates:
        try:
            tags.append(_PLACEHOLDER.sub(lambda m: str(params[m.group(1)]), template))
        except KeyError:
            continue
    return tags


def rule_params(rule: RouteRule, path: str) -> dict[str, str]:
    """The ``{name}`` segments of ``rule.path`` as matched by ``path``."""
    if rule.path is None:
        return {}
    match = compile_pattern(rule.path).match(path)
    return {k: v for k, v in match.groupdict().items() if v is not None} if match else {}
