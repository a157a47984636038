"""Type stubs for the Rust extension; checked against it by mypy.stubtest."""

import os
from collections.abc import Sequence
from typing import Literal, final

import numpy as np
import numpy.typing as npt

__version__: str

def sha256_file(path: str | os.PathLike[str]) -> str: ...
def blake3_file(path: str | os.PathLike[str]) -> str: ...
def hash_files(paths: Sequence[str | os.PathLike[str]], algorithm: str = "sha256") -> list[str]: ...

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
