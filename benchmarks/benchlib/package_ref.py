"""Benchmark the package as committed at a git ref instead of the working tree.

``--ref HEAD`` (or a tag, a commit) exports ``fastapi_tiered_cache/`` at that ref into a
temporary directory that goes first on ``sys.path`` and on ``PYTHONPATH`` (for the uvicorn
and py-spy subprocesses), so a half-edited working tree cannot break or skew a run, and
two commits can be compared. Must run before anything imports the package.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pop_ref(argv: list[str]) -> str | None:
    """Remove ``--ref X`` / ``--ref=X`` from ``argv`` and return X."""
    for i, arg in enumerate(argv):
        if arg == "--ref" and i + 1 < len(argv):
            ref = argv[i + 1]
            del argv[i : i + 2]
            return ref
        if arg.startswith("--ref="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


def use_ref(ref: str) -> str:
    """Export the package at ``ref`` and put it first on the import path; return the commit."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", ref],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    target = Path(tempfile.mkdtemp(prefix=f"ftc-{commit}-"))
    atexit.register(shutil.rmtree, target, True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "fastapi_tiered_cache"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p
    )
    os.environ["BENCH_PACKAGE_REF"] = f"{ref} ({commit})"
    return commit
