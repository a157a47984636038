"""Beside `lint-imports` (pyproject.toml [tool.importlinter], no ignores: nothing in the
package imports its root, the extension is imported as ``from caxton_models._core import
name``). Here, read from the source with
lazy and TYPE_CHECKING imports counted: inside the package, the root is imported only
for a submodule, never for a name its ``__init__`` defines (which would tie a lower
layer to the facade that imports every layer: the old ``__init__`` <-> ``acquire.hub``
cycle), and ``metrics`` never imports the ``prometheus`` integration above it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import caxton_models

PACKAGE = Path(caxton_models.__file__).parent


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue
        yield str(path.relative_to(PACKAGE)), ast.parse(path.read_text(encoding="utf-8"))


def _is_submodule(name: str) -> bool:
    return (
        (PACKAGE / f"{name}.py").is_file()
        or (PACKAGE / name / "__init__.py").is_file()
        or any(PACKAGE.glob(f"{name}.*.so"))
        or any(PACKAGE.glob(f"{name}.*.pyd"))
    )


def root_imports(tree: ast.Module) -> list[str]:
    """The names a module takes from the package root that are not submodules."""
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "caxton_models":
            bad += [a.name for a in node.names if not _is_submodule(a.name)]
    return bad


def imported(tree: ast.Module) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_the_scan_sees_a_root_import() -> None:
    tree = ast.parse("def f():\n    from caxton_models import __version__, _core, metrics\n")
    assert root_imports(tree) == ["__version__"]


def test_no_module_takes_a_name_from_the_package_root() -> None:
    found = {name: bad for name, tree in _modules() if (bad := root_imports(tree))}
    assert found == {}, f"import these from their own module, not caxton_models: {found}"


def test_metrics_does_not_import_the_prometheus_integration() -> None:
    tree = ast.parse((PACKAGE / "metrics.py").read_text(encoding="utf-8"))
    assert not {m for m in imported(tree) if "prometheus" in m.split(".")[-1]}


def test_the_import_contracts_ignore_nothing() -> None:
    """Nothing in the package imports its root, so no contract needs an ignore."""
    pytest.importorskip("tomllib", reason="tomllib is Python >= 3.11")
    import tomllib

    cfg = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = cfg["tool"]["importlinter"]["contracts"]
    assert [c["name"] for c in contracts if c.get("ignore_imports")] == []
    # Cycles among the children of each subpackage count too, not only the top level.
    acyclic = [c for c in contracts if c["type"] == "acyclic_siblings"]
    assert acyclic and all(c.get("depth", 0) >= 1 for c in acyclic), acyclic
