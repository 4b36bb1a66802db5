"""Print what each dependency pyproject.toml names resolved to (pin and installed version), so a CI log says which
library versions its test results hold for."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
import sys
import tomllib


def requirements() -> list[str]:
    """pyproject.toml's dependencies, then those of every extra."""
    project = tomllib.loads((pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]


def installed(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement).group()
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    print(f"python {sys.version.split()[0]}")
    for requirement in requirements():
        print(f"{requirement}: {installed(requirement)}")
