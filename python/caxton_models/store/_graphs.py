"""The optimised-graph cache: ONNX graphs the runtime derives from a model's
files (optimised, quantised, built from safetensors), kept under
``<root>/.graphs/<model>/`` so that published model folders are never written
again, and counted with their model in size limits and eviction.

Graphs of a folder outside any cache go to ``<default root>/.graphs/_external/``;
a folder the user pointed us at is never written to.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from caxton_models.store._fs import DIR_MODE, rmtree, walk_files
from caxton_models.store._records import METADATA_FILE

GRAPHS = ".graphs"
EXTERNAL = "_external"


class GraphCache:
    """The graphs of one cache root."""

    def __init__(self, root: Path) -> None:
        self.dir = root / GRAPHS

    def dir_for(self, model: str) -> Path:
        return self.dir / model

    def bytes_for(self, model: str) -> int:
        return _own_bytes(self.dir_for(model))

    def drop(self, model: str) -> None:
        rmtree(self.dir_for(model))

    def total_bytes(self) -> int:
        return _own_bytes(self.dir)


def _own_bytes(folder: Path) -> int:
    """Bytes of the files below ``folder``, leaving out hard links (a graph's
    link to its model's weights file: those bytes are the model's)."""
    total = 0
    with contextlib.suppress(OSError):
        for _, st in walk_files(folder):
            if st.st_nlink == 1:
                total += st.st_size
    return total


def graph_dir_for(model_dir: Path, default_root: Path) -> Path:
    """Where the derived graphs of ``model_dir`` live: beside it in its cache
    when it is a cache entry (it has our metadata), else under the default
    cache root."""
    model_dir = model_dir.absolute()
    if (model_dir / METADATA_FILE).is_file():
        return GraphCache(model_dir.parent).dir_for(model_dir.name)
    return GraphCache(default_root).dir_for(EXTERNAL)


def publish_graph(write: Callable[[Path], None], dest: Path) -> None:
    """Runs ``write(path)`` in a private temp folder beside ``dest``, then
    moves what it wrote into place, the graph last: a graph file that exists
    is always complete, whoever crashes when."""
    dest.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".caxton_tmp") as tmp:
        write(Path(tmp) / dest.name)
        for f in sorted(Path(tmp).iterdir(), key=lambda f: f.name == dest.name):
            os.replace(f, dest.parent / f.name)
