"""The state of a cache at one moment (L1 size and evictions, the breaker, the tiers up):
read when metrics are collected or stats asked for, so the hit path pays nothing for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stores import TieredStore

__all__ = ["BREAKER_STATES", "Gauges", "breaker_state", "read_gauges"]

BREAKER_STATES = {"closed": 0, "open": 1, "half-open": 2}


def breaker_state(store: TieredStore) -> str | None:
    """The L2 circuit breaker's state (``closed``, ``open``, ``half-open``), None if unknown.

    Read defensively: the breaker is optional and its state may be a string, an enum or an int.
    """
    state = getattr(getattr(store, "breaker", None), "state", None)
    if state is None or callable(state):
        return None
    value = getattr(state, "value", state)
    if isinstance(value, int) and not isinstance(value, bool):
        names = {number: name for name, number in BREAKER_STATES.items()}
        return names.get(value)
    text = str(value).strip().lower().replace("_", "-").replace(" ", "-")
    text = "half-open" if text == "halfopen" else text
    return text if text in BREAKER_STATES else None


@dataclass(frozen=True, slots=True)
class Gauges:
    """The state of a cache at one moment (``None`` where a tier is absent or unknown)."""

    l1_entries: int | None
    l1_bytes: int | None
    l1_evictions: int | None
    breaker: str | None
    tiers_up: dict[str, int]


def read_gauges(store: TieredStore) -> Gauges:
    """Read the tiers' current state; a tier counts as up when configured and not cut off."""
    l1, l2 = store.l1, store.l2
    breaker = breaker_state(store) if l2 is not None else None  # it guards L2 only
    tiers_up: dict[str, int] = {}
    if l1 is not None:
        tiers_up["l1"] = 1
    if l2 is not None:
        tiers_up["l2"] = 0 if breaker == "open" else 1
    return Gauges(
        l1_entries=None if l1 is None else len(l1),
        l1_bytes=None if l1 is None else l1.current_bytes,
        l1_evictions=None if l1 is None else l1.evictions,
        breaker=breaker,
        tiers_up=tiers_up,
    )
