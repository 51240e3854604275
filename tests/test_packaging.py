"""The package declares what it imports: every third-party module that src/, app/ or recipes/ import (at the
top or inside a function) comes from a distribution named in pyproject.toml's dependencies, so a fresh
`pip install -e .` has it, whatever other packages happen to pull in today."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions

import pytest
from conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

OWN = {"tunelab", "app", "conftest"}


def imported_modules() -> dict[str, str]:
    """{top-level module: a file that imports it} for src/, app/ and recipes/."""
    found: dict[str, str] = {}
    for folder in ("src", "app", "recipes"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.partition(".")[0], str(path.relative_to(ROOT)))
    return found


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_a_declared_dependency():
    """Core imports are dependencies; an optional feature's (Ray) is in its extra, never only in dev."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [
        spec for name, specs in project["optional-dependencies"].items() if name != "dev" for spec in specs
    ]
    declared = {
        normalized(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0])
        for spec in [*project["dependencies"], *extras]
    }
    distributions = packages_distributions()
    missing = []
    for module, where in sorted(imported_modules().items()):
        if module in sys.stdlib_module_names or module in OWN:
            continue
        owners = {normalized(d) for d in distributions.get(module, [module])}
        if not owners & declared:
            missing.append(f"{module} (imported in {where}; from {', '.join(sorted(owners))})")
    assert not missing, "imported but not in pyproject.toml's dependencies: " + "; ".join(missing)
