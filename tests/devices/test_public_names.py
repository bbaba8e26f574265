"""Every module of devices/ says what it offers: ``__all__`` names exactly what it defines
without a leading underscore, so a name used from outside is one the module means to keep."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import devices

MODULES = [info.name for info in pkgutil.iter_modules(devices.__path__)]


def defined_public_names(path: Path) -> set[str]:
    """The top-level functions, classes and assigned names of a module, but ``_private``."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def test_the_package_lists_its_modules() -> None:
    assert sorted(devices.__all__) == sorted(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_each_module_declares_exactly_what_it_defines(name: str) -> None:
    module = importlib.import_module(f"devices.{name}")
    assert module.__file__ is not None

    declared = getattr(module, "__all__", None)
    assert declared is not None, f"devices/{name}.py has no __all__"
    assert all(hasattr(module, item) for item in declared)
    assert set(declared) == defined_public_names(Path(module.__file__))
