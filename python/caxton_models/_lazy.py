"""Names a package exports without importing their modules until first use (PEP 562).

Start-up is a promise (the first-vector gate in benches/, the import budget in
tests/test_import_budget.py): a package that re-exports what only some paths need
loads it on first access instead, through this one helper.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package``: ``where`` maps an exported name to the
    module that defines it (a full dotted name); the value is imported on first
    access and kept in the package's namespace, so later reads are plain lookups."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
