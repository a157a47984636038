"""Type stubs for the Rust extension; checked against it by mypy.stubtest."""

import os
from collections.abc import Callable, Sequence
from typing import final

__version__: str

def sha256_file(path: str | os.PathLike[str]) -> str: ...
def blake3_file(path: str | os.PathLike[str]) -> str: ...
def hash_files(paths: Sequence[str | os.PathLike[str]], algorithm: str = "sha256") -> list[str]: ...
def git_blob_sha1_file(path: str | os.PathLike[str]) -> str: ...

# --- HTTP client and download engine (rust/src/http.rs, rust/src/download/) ---

@final
class HttpResponse:
    """A fully read HTTP response; header names are lower-case."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def body(self) -> bytes: ...
    @property
    def url(self) -> str: ...

@final
class DownloadResult:
    """What a download did."""

    @property
    def sha256(self) -> str: ...
    @property
    def bytes(self) -> int: ...
    @property
    def fetched(self) -> int: ...
    @property
    def ranges(self) -> int: ...
    @property
    def retries(self) -> int: ...
    @property
    def resumed_bytes(self) -> int: ...
    @property
    def connections(self) -> int: ...
    @property
    def url(self) -> str: ...

def http_request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    follow_redirects: bool = True,
    max_bytes: int = 67108864,
) -> HttpResponse: ...
def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    sha256: str | None = None,
    headers: dict[str, str] | None = None,
    connections: int | None = None,
    chunk_size: int | None = None,
    timeout: float = 30.0,
    retries: int = 8,
    progress: Callable[[int], object] | None = None,
) -> DownloadResult: ...
def download_many(
    items: Sequence[dict[str, object]],
    *,
    max_concurrent: int = 3,
    connections: int | None = None,
    headers: dict[str, str] | None = None,
    chunk_size: int | None = None,
    timeout: float = 30.0,
    retries: int = 8,
    progress: Callable[[int], object] | None = None,
) -> list[DownloadResult]: ...
