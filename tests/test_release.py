"""Release readiness: what ``pip install fastapi-tiered-cache`` gives a user agrees with the
README, the classifiers agree with the Pythons tested, ``[all]`` holds every run-time
extra, and the wheel check (``requirements/check_wheel.py``, run by ``tox -e package``)
refuses a wheel whose metadata is wrong."""

from __future__ import annotations

import configparser
import importlib.util
import re
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
DEVELOPMENT_EXTRAS = {"test", "lint", "typecheck"}


def load_check_wheel() -> ModuleType:
    path = ROOT / "requirements" / "check_wheel.py"
    spec = importlib.util.spec_from_file_location("_check_wheel", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tox_pythons() -> list[str]:
    """The Pythons the default tox run tests on: ``pyXY`` envs, and envs naming a
    ``base_python`` (``lowest`` is 3.10)."""
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    pythons = set()
    for env in (env.strip() for env in tox["tox"]["env_list"].split(",")):
        if re.fullmatch(r"py3\d+", env):
            pythons.add(f"3.{env[3:]}")
        elif (base := tox.get(f"testenv:{env}", "base_python", fallback="")).startswith("python3"):
            pythons.add(base.removeprefix("python"))
    return sorted(pythons, key=lambda version: tuple(map(int, version.split("."))))


def test_the_readme_install_line_installs_this_project() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    assert f"pip install {PROJECT['name']}\n" in readme
    for extra in re.findall(rf'pip install "{PROJECT["name"]}\[([a-z,]+)\]"', readme):
        assert set(extra.split(",")) <= set(PROJECT["optional-dependencies"]), extra


def test_the_classifiers_name_exactly_the_pythons_tested() -> None:
    classifiers = PROJECT["classifiers"]
    named = sorted(
        c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r".*:: Python :: 3\.\d+", c)
    )

    assert named == tox_pythons() == list(load_check_wheel().PYTHONS)
    assert PROJECT["requires-python"] == f">={named[0]}"
    assert "Typing :: Typed" in classifiers
    assert PROJECT["readme"] == "README.md"  # the long description, Markdown


def test_all_holds_every_run_time_extra() -> None:
    extras = PROJECT["optional-dependencies"]
    runtime = set(extras) - DEVELOPMENT_EXTRAS - {"all"}
    (bundle,) = extras["all"]
    name, _, listed = bundle.partition("[")

    assert name == PROJECT["name"]
    assert sorted(listed.rstrip("]").split(",")) == sorted(runtime)


def test_tox_package_checks_the_wheel_in_a_fresh_virtualenv() -> None:
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    commands = tox["testenv:package"]["commands"]

    assert "twine check --strict" in commands
    assert "requirements/check_wheel.py {envtmpdir}/dist" in commands
    assert "package" in tox["tox"]["env_list"]


def wheel_with(tmp_path: Path, **changes: Any) -> Path:
    """A wheel holding only a METADATA file: the project's own fields, then ``changes``."""
    check = load_check_wheel()
    fields: dict[str, Any] = {
        "Metadata-Version": "2.4",
        "Name": PROJECT["name"],
        "Version": check.version(),
        "Requires-Python": PROJECT["requires-python"],
        "License-Expression": "MIT",
        "Classifier": PROJECT["classifiers"],
        "Provides-Extra": sorted(PROJECT["optional-dependencies"]),
        "Description-Content-Type": "text/markdown",
    }
    description = changes.pop("description", (ROOT / "README.md").read_text(encoding="utf-8"))
    fields.update(changes)
    lines = []
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{name}: {item}")
    wheel = tmp_path / "fastapi_tiered_cache-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        text = "\n".join(lines) + "\n\n" + description
        archive.writestr("fastapi_tiered_cache-0.dist-info/METADATA", text.encode("utf-8"))
    return wheel


def test_the_wheel_check_accepts_the_project_s_metadata(tmp_path: Path) -> None:
    load_check_wheel().check_metadata(wheel_with(tmp_path))


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"Name": "fastapi-tiered"}, "Name is 'fastapi-tiered'"),
        ({"Version": "9.9.9"}, "Version is '9.9.9'"),
        ({"Description-Content-Type": "text/plain"}, "not declared as Markdown"),
        ({"description": "An older README."}, "not the README"),
        ({"Classifier": ["Typing :: Typed"]}, "classifiers missing"),
        ({"Provides-Extra": ["demo"]}, "extras missing"),
    ],
    ids=["name", "version", "content-type", "description", "classifiers", "extras"],
)
def test_the_wheel_check_refuses_wrong_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(SystemExit) as raised:
        load_check_wheel().check_metadata(wheel_with(tmp_path, **changes))

    assert raised.value.code == 1
    assert complaint in capsys.readouterr().err
