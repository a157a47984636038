"""Fixtures more than one test module uses, one definition each, named by
what they are (registered by tests/conftest.py as a plugin). caxton_models is
imported inside each fixture, so that loading this plugin imports nothing of
the package before a test asks for it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.data import hfhub2_dir, require

if TYPE_CHECKING:
    from caxton_models.ops.server import ServerThread
    from caxton_models.runtime.embedder import Embedder
    from tests.support.fakehub import FakeHub


@pytest.fixture
def fake_hub(minilm_dir: Path) -> FakeHub:
    """The in-process hub stand-in serving the real all-MiniLM-L6-v2 at its commit."""
    from tests.support.fakehub import COMMIT, MINILM_REPO_ID, FakeHub

    return FakeHub({MINILM_REPO_ID: (minilm_dir, COMMIT)})


@pytest.fixture(scope="module")
def minilm_server(minilm_dir: Path) -> Iterator[ServerThread]:
    """`caxton model serve` in this process on 127.0.0.1, serving the real
    all-MiniLM-L6-v2 (one per test module)."""
    from caxton_models.ops.server import ServerThread
    from tests.support.hubfaults import minilm_catalog

    with ServerThread(minilm_catalog(minilm_dir)) as srv:
        yield srv


@pytest.fixture(scope="module")
def minilm(minilm_dir: Path, graph_cache_dir: Path) -> Embedder:
    """The real all-MiniLM-L6-v2 as an Embedder (one per test module)."""
    from caxton_models.runtime.embedder import Embedder

    return Embedder.from_dir(minilm_dir, graph_cache_dir=graph_cache_dir)


@pytest.fixture
def publisher_repo(tmp_path: Path, architectures_dir: Path) -> Path:
    """A copy of the tiny sentence-transformers BERT that a test edits as its
    publisher would (tests/support/versions.py pushes a commit from it)."""
    return Path(shutil.copytree(architectures_dir / "st-bert-mean-normalize", tmp_path / "repo"))


@pytest.fixture(scope="session")
def huggingface_hub_2() -> Path:
    """A folder to put first on PYTHONPATH for a subprocess that must run the
    huggingface_hub 2.x client (the test command's own is 1.x)."""
    where = hfhub2_dir()
    require(
        where / "huggingface_hub",
        "huggingface_hub 2.x",
        f"python -m pip install --target {where} 'huggingface_hub>=2,<3' "
        "(scripts/test.sh does), or set CAXTON_HFHUB2_DIR",
    )
    return where
