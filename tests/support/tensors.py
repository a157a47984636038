"""safetensors files read as the Rust core hands them over (memory-mapped,
F16/BF16 widened to F32), without the safetensors package, which has no numpy
bfloat16: the graph builder's tests compare against these."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of ``path``: F32 ones are views of a read-only memory map,
    F16 and BF16 ones are widened to new F32 arrays."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        raw = data[start:end].view(_DTYPES[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":  # the high half of a float32
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            raw = raw.astype(np.float32)
        out[name] = raw
    return out


def f32_offsets(path: Path) -> dict[str, int]:
    """Absolute byte offset of every F32 tensor of ``path``."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {k: 8 + n + v["data_offsets"][0] for k, v in header.items() if v["dtype"] == "F32"}
