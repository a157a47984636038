"""The test suite's own layout: a test module imports helpers from
tests/support, never from another test module (importing one runs its
module-level code, re-registers its fixtures under the importer's name and
ties two files that change for different reasons)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_test_module(dotted: str) -> bool:
    """``tests.acquire.test_manager`` or ``tests.conftest``: a module pytest
    collects or loads itself, not a helper."""
    parts = dotted.split(".")
    return parts[0] == "tests" and any(p.startswith("test_") or p == "conftest" for p in parts[1:])


def imports_of_test_modules(source: str) -> list[str]:
    """Every test module (as a dotted name) that ``source`` imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _is_test_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _is_test_module(node.module):
                found.append(node.module)
            else:  # ``from tests.acquire import test_versions``
                found += [
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if _is_test_module(f"{node.module}.{a.name}")
                ]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names = [node.module or ""] + [a.name for a in node.names]
            found += [f"(relative) {n}" for n in names if n.startswith("test_") or n == "conftest"]
    return found


def test_the_check_sees_every_form_of_import() -> None:
    """Each way of importing a test module is caught; support imports are not."""
    bad = {
        "from tests.acquire.test_manager import FakeHub": "tests.acquire.test_manager",
        "import tests.ops.test_serve": "tests.ops.test_serve",
        "from tests.acquire import test_versions as v": "tests.acquire.test_versions",
        "from tests.conftest import REPO": "tests.conftest",
        "from .test_cache import install": "(relative) test_cache",
    }
    for source, name in bad.items():
        assert imports_of_test_modules(source) == [name], source
    fine = (
        "from tests.support.fakehub import FakeHub\n"
        "from tests.support import versions\n"
        "import tests.support.cli\n"
        "from caxton_models.acquire import manager\n"
    )
    assert imports_of_test_modules(fine) == []


def test_no_test_module_imports_another() -> None:
    offenders = {
        path.relative_to(TESTS.parent).as_posix(): found
        for path in sorted(TESTS.rglob("*.py"))
        if (found := imports_of_test_modules(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}, (
        "move the shared helpers into tests/support (fixtures into "
        f"tests/support/fixtures.py) and import them from there: {offenders}"
    )
