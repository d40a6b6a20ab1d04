"""Cache tiers: ``MemoryStore`` (L1), ``RedisStore`` (L2) and ``TieredStore`` (both)."""

from __future__ import annotations

from .base import Store
from .memory import MemoryStore
from .redis import RedisStore
from .tiered import Tier, TieredStore

__all__ = ["MemoryStore", "RedisStore", "Store", "Tier", "TieredStore"]
