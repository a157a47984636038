"""Type stubs for the Rust extension; checked against it by mypy.stubtest."""

import os
from collections.abc import Sequence

__version__: str

def sha256_file(path: str | os.PathLike[str]) -> str: ...
def blake3_file(path: str | os.PathLike[str]) -> str: ...
def hash_files(paths: Sequence[str | os.PathLike[str]], algorithm: str = "sha256") -> list[str]: ...
