"""``config``: the effective settings, where each came from (env, .env or default),
secrets masked."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from ..settings import ENV_PREFIX, CacheSettings
from .connect import read_settings
from .output import MASK, print_table, shown

__all__ = ["command_config", "setting_sources"]


def setting_sources(environ: Mapping[str, str], env_file: Path | None) -> dict[str, str]:
    """Where each setting comes from: ``env``, ``.env`` or ``default``."""
    from dotenv import dotenv_values

    env = {name.upper() for name in environ}
    dotenv = (
        {name.upper() for name in dotenv_values(env_file)}
        if env_file is not None and env_file.is_file()
        else set()
    )

    def given(names: set[str], variable: str) -> bool:
        return variable in names or any(name.startswith(variable + "__") for name in names)

    sources = {}
    for field in CacheSettings.model_fields:
        variable = ENV_PREFIX + field.upper()
        sources[field] = (
            "env" if given(env, variable) else ".env" if given(dotenv, variable) else "default"
        )
    return sources


def command_config(args: argparse.Namespace) -> int:
    settings = read_settings()
    values = settings.model_dump(mode="json")
    env_file = settings.model_config.get("env_file")
    sources = setting_sources(os.environ, Path(str(env_file)) if env_file else None)
    rows = [
        (
            ENV_PREFIX + field.upper(),
            sources[field],
            MASK if isinstance(getattr(settings, field), SecretStr) else shown(values[field]),
        )
        for field in CacheSettings.model_fields
    ]
    print_table(("VARIABLE", "SOURCE", "VALUE"), rows)
    return 0
