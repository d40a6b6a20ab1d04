"""``python -m fastapi_tiered_cache.cli``: the console script."""

from __future__ import annotations

from . import main

raise SystemExit(main())
