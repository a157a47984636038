"""Type stubs for the Rust extension; checked against it by mypy.stubtest."""

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Literal, TypedDict, final

import numpy as np
import numpy.typing as npt
from typing_extensions import NotRequired

__version__: str

def sha256_file(path: str | os.PathLike[str]) -> str: ...
def blake3_file(path: str | os.PathLike[str]) -> str: ...
def hash_files(paths: Sequence[str | os.PathLike[str]], algorithm: str = "sha256") -> list[str]: ...
def git_blob_sha1_file(path: str | os.PathLike[str]) -> str: ...

# --- HTTP client and download engine (rust/src/http/, rust/src/download/) ---

# The engine's defaults (rust/src/download/options.rs, rust/src/http/retry.rs),
# read by config.py rather than restated; the signatures below spell the same
# values (tests/test_config.py checks that they agree).
DEFAULT_CHUNK_BYTES: Final[int]
MAX_CONNECTIONS: Final[int]
DEFAULT_RETRIES: Final[int]
DEFAULT_TIMEOUT_SECS: Final[float]
DEFAULT_RETRY_DELAY_MS: Final[int]

# Whether a living process holds a lock on ``path``; None: this file system
# cannot tell. The one liveness test of the core and the store (store/_fs.held).
def lock_held(path: str | os.PathLike[str]) -> bool | None: ...

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
    retry_delay: float = 0.5,
) -> HttpResponse: ...

# Builds the network runtime and the HTTP client now; sends nothing.
def warm_up() -> None: ...
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
    retry_delay: float = 0.5,
    time_limit: float | None = None,
) -> DownloadResult: ...

class DownloadItem(TypedDict):
    """One file for ``download_many``; the core refuses any other key."""

    url: str
    dest: str | os.PathLike[str]
    size: NotRequired[int | None]
    sha256: NotRequired[str | None]
    headers: NotRequired[dict[str, str] | None]

def download_many(
    items: Sequence[DownloadItem],
    *,
    max_concurrent: int = 3,
    connections: int | None = None,
    headers: dict[str, str] | None = None,
    chunk_size: int | None = None,
    timeout: float = 30.0,
    retries: int = 8,
    progress: Callable[[int], object] | None = None,
    retry_delay: float = 0.5,
    time_limit: float | None = None,
    sync: bool = True,
) -> list[DownloadResult]: ...

# --- batch assembly and pooling (rust/src/batch.rs) ---

@final
class BatchPlan:
    def __new__(
        cls,
        seqs: list[list[int]],
        *,
        token_budget: int,
        max_batch_size: int = 1024,
        pad_id: int = 0,
        pad_to_multiple_of: int = 1,
        batch_overhead: int = 16,
    ) -> BatchPlan: ...
    def __len__(self) -> int: ...
    @property
    def order(self) -> npt.NDArray[np.int64]: ...
    @property
    def offsets(self) -> list[int]: ...
    @property
    def padded_tokens(self) -> int: ...
    @property
    def real_tokens(self) -> int: ...
    def batch(
        self, k: int
    ) -> tuple[
        npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]
    ]: ...

def pool_into(
    hidden: npt.NDArray[np.float32],
    attention_mask: npt.NDArray[np.int64],
    rows: npt.NDArray[np.int64],
    out: npt.NDArray[np.float32],
    *,
    mode: Literal["mean", "cls", "max", "mean_sqrt_len", "lasttoken"] | str = "mean",
    normalize: bool = True,
) -> None: ...

# --- safetensors (rust/src/safetensors.rs) ---

@final
class SafeTensors:
    """A safetensors file, memory-mapped and validated in full on opening."""

    def __new__(cls, path: str | os.PathLike[str]) -> SafeTensors: ...
    @property
    def path(self) -> str: ...
    def keys(self) -> list[str]: ...
    def metadata(self) -> dict[str, str] | None: ...
    def info(self, name: str) -> tuple[str, tuple[int, ...]]: ...
    def tensor(self, name: str, *, as_f32: bool = False) -> npt.NDArray[Any]: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def __contains__(self, key: str, /) -> bool: ...

def safetensors_header(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]: ...

# --- ONNX (rust/src/onnx.rs) ---

def onnx_external_data(path: str | os.PathLike[str]) -> list[tuple[str, int, str]]:
    """``[(location, end, tensor)]``: each external data file once, the furthest
    byte a tensor reads from it and that tensor; raises InvalidModelFormat."""

# --- BM25 keyword vectors (rust/src/bm25.rs) ---

@final
class Bm25:
    """fastembed-compatible BM25; embed_* return CSR (indptr, indices, values)."""

    def __new__(
        cls,
        language: str = "english",
        *,
        stem: bool = True,
        stopwords: Sequence[str] | None = None,
        token_max_length: int = 40,
        k1: float = 1.2,
        b: float = 0.75,
        avg_len: float = 256.0,
    ) -> Bm25: ...
    def embed_documents(
        self, texts: Sequence[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...
    def embed_queries(
        self, texts: Sequence[str]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...
    def terms(self, texts: Sequence[str]) -> list[list[str]]: ...
    def average_length(self, texts: Sequence[str]) -> float: ...
    @staticmethod
    def token_id(term: str) -> int: ...
    @staticmethod
    def languages() -> list[str]: ...
    @property
    def language(self) -> str: ...
    @property
    def stem(self) -> bool: ...
    @property
    def stopwords(self) -> list[str]: ...
    @property
    def token_max_length(self) -> int: ...
    @property
    def k1(self) -> float: ...
    @property
    def b(self) -> float: ...
    @property
    def avg_len(self) -> float: ...

# --- the error seam (rust/src/exceptions.rs), for its test ---

def _error_classes() -> list[str]: ...
def _error_samples() -> list[tuple[str, str, dict[str, int | str]]]: ...
def _raise_error_sample(index: int) -> None: ...
