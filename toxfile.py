"""tox's inline plug-in: find every Python 3.10-3.13 that pyenv installed.

pyenv's shims (``python3.10``, ...) answer only for the versions pyenv has selected, so on a
machine whose Pythons come from pyenv, tox would report "could not find python
interpreter" for the others. When pyenv is present and ``PYENV_VERSION`` is not set, this
selects every installed 3.10-3.13 for the tox run (and its environments, which pass the
variable on), so ``tox`` works as written in the README, pyenv or not.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

from tox.plugin import impl

_WANTED = re.compile(r"3\.1[0-3]\.\d+\Z")


def pyenv_versions() -> list[str]:
    """Installed CPython 3.10-3.13 versions, newest first ([] without pyenv)."""
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return []
    try:
        listed = subprocess.run(
            [pyenv, "versions", "--bare"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    versions = [line.strip() for line in listed.splitlines() if _WANTED.match(line.strip())]
    return sorted(versions, key=lambda v: tuple(int(p) for p in v.split(".")), reverse=True)


@impl
def tox_add_core_config(core_conf: Any, state: Any) -> None:
    if os.environ.get("PYENV_VERSION"):
        return  # the user chose: respect it
    versions = pyenv_versions()
    if versions:
        os.environ["PYENV_VERSION"] = ":".join(versions)
