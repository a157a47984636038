"""A safetensors file's tensors as float32 arrays that live in files, not in
memory, for building the graph of a model larger than the RAM it may use.

Float32 tensors are read-only views of the memory-mapped safetensors file
(referenced by the graph at their byte offsets when that file sits beside
the graph). An F16/BF16 tensor is widened when the graph builder first asks
for it, written to a side file and dropped, so the anonymous memory this
costs is one tensor, never the model, and tensors the graph does not use
(an ``lm_head``) are never widened at all. The side file is mapped back and
referenced by the graph; ONNX Runtime maps both files in place.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import numpy as np

from caxton_models._core import SafeTensors, safetensors_header

__all__ = ["MappedTensors"]

#: Tensors in the side file start on page boundaries, so a mapping of one
#: of them can begin exactly at its first byte.
_ALIGN = mmap.PAGESIZE
_FLOATS = ("F16", "BF16", "F32")


class MappedTensors(Mapping[str, np.ndarray]):
    """Every tensor of ``weights_path`` by name; float ones as float32.

    ``in_place`` says ``weights_path`` is reachable by its own name from the
    side file's folder (the graph's), so its float32 tensors are referenced
    there; otherwise they too are copied to the side file, one at a time.
    :meth:`offsets` says, per file name, where the graph finds each float32
    tensor handed out (absolute byte offsets)."""

    def __init__(self, weights_path: Path, side_file: Path, *, in_place: bool) -> None:
        self._st = SafeTensors(weights_path)
        self._path = weights_path
        self._side_file = side_file
        self._in_place = in_place
        self._header = safetensors_header(weights_path)
        with open(weights_path, "rb") as f:
            self._data_start = 8 + int.from_bytes(f.read(8), "little")
        self._cache: dict[str, np.ndarray] = {}
        self._in_file: dict[str, int] = {}
        self._in_side: dict[str, int] = {}
        self._out: IO[bytes] | None = None

    def __iter__(self) -> Iterator[str]:
        return iter(self._st)

    def __len__(self) -> int:
        return len(self._st)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._st

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self._load(name)
        return self._cache[name]

    def _load(self, name: str) -> np.ndarray:
        dtype = self._st.info(name)[0]
        if dtype not in _FLOATS:  # integer buffers some checkpoints carry
            return self._st.tensor(name)
        if dtype == "F32" and self._in_place:
            self._in_file[name] = self._data_start + int(self._header[name]["data_offsets"][0])
            return self._st.tensor(name)
        return self._widen(name)

    def _widen(self, name: str) -> np.ndarray:
        """Writes ``name`` as float32 to the side file and maps it back."""
        if self._out is None:
            self._out = open(self._side_file, "wb")  # noqa: SIM115 (closed in close())
        array = self._st.tensor(name, as_f32=True)
        start = -(-self._out.tell() // _ALIGN) * _ALIGN
        self._out.seek(start)
        self._out.write(np.ascontiguousarray(array, dtype="<f4").data)
        self._out.flush()
        self._in_side[name] = start
        shape = tuple(array.shape)
        del array  # the only widened copy: from here on the page cache holds it
        if not int(np.prod(shape, dtype=np.int64)):
            return np.zeros(shape, np.float32)
        return np.memmap(self._side_file, dtype="<f4", mode="r", offset=start, shape=shape)

    def close(self) -> None:
        """Finishes the side file (the mapped arrays stay valid)."""
        if self._out is not None:
            self._out.close()
            self._out = None

    def offsets(self) -> dict[str, dict[str, int]]:
        """{file name: {tensor name: byte offset}} of the float32 tensors
        handed out so far."""
        found = {self._path.name: self._in_file, self._side_file.name: self._in_side}
        return {file: names for file, names in found.items() if names}
