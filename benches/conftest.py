"""Benchmarks share the test fixtures (data location, isolation)."""

from tests.conftest import (  # noqa: F401
    _isolated_env,
    corpora_dir,
    minilm_dir,
    reference_dir,
    shared_dir,
)
