"""Tiny model repositories for the fault matrix, served over the Hub protocol
by ``caxton model serve`` on 127.0.0.1 (one server per process, started on
first use), and a manager pointed at them through a FaultProxy.

The repo is a real sentence-transformers layout whose weights are a valid
ONNX protobuf (a ModelProto with one initializer of raw bytes), so the
format checks run on it, and small enough that a scenario costs milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import struct
import tempfile
from pathlib import Path

from caxton_models.acquire.manager import ModelManager
from caxton_models.config import load_config
from caxton_models.ops.server import Catalog, ServerThread
from tests.support.hubfaults import Fault, FaultProxy
from tests.support.protobuf import onnx_model

__all__ = [
    "COMMITS",
    "MODELS",
    "Fault",
    "FaultProxy",
    "hub",
    "manager",
    "onnx_model",
    "repo_sha256",
    "write_config",
]

#: name -> (repo id, weights size); "tiny" is the workhorse.
MODELS = {
    "tiny": ("caxton-faults/tiny", 1_500_000),
    "tiny-b": ("caxton-faults/tiny-b", 300_000),
    "tiny-c": ("caxton-faults/tiny-c", 300_000),
    "tiny-st": ("caxton-faults/tiny-st", 0),
}
COMMITS = {name: hashlib.sha1(name.encode()).hexdigest() for name in MODELS}


# ------------------------------------------------------------------ protobuf, by hand


def _safetensors(n: int) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(random.Random(n).randbytes(n))


def _write_repo(root: Path, name: str, weights: int) -> Path:
    d = root / name
    (d / "onnx").mkdir(parents=True)
    (d / "1_Pooling").mkdir()
    (d / ".gitattributes").write_text("*.onnx filter=lfs diff=lfs merge=lfs -text\n")
    (d / "config.json").write_text(json.dumps({"hidden_size": 8, "model_type": "bert"}))
    (d / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"vocab": {}}}))
    (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (d / "modules.json").write_text(json.dumps([{"idx": 0, "type": "Transformer"}]))
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    rnd = random.Random(name)
    if name == "tiny-st":  # safetensors only: a repo with an ONNX export runs that instead
        (d / "model.safetensors").write_bytes(_safetensors(4096))
    else:
        (d / "onnx" / "model.onnx").write_bytes(onnx_model(rnd.randbytes(weights)))
    return d


@functools.lru_cache(maxsize=1)
def _repos() -> Path:
    root = Path(tempfile.mkdtemp(prefix="caxton-fault-repos."))
    for name, (_, weights) in MODELS.items():
        _write_repo(root, name, weights or 1000)
    return root


def repo_dir(name: str) -> Path:
    return _repos() / name


def repo_sha256(name: str, rel: str) -> str:
    return hashlib.sha256((repo_dir(name) / rel).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def hub() -> ServerThread:
    """The mirror serving every tiny repo (lives as long as the process)."""
    cat = Catalog(source="fault-matrix")
    for name, (repo_id, _) in MODELS.items():
        cat.merge(Catalog.from_folder(repo_dir(name), repo_id, commit=COMMITS[name]))
    srv = ServerThread(cat)
    srv.start()
    return srv


def write_config(path: Path, extra: str = "") -> Path:
    """caxton.yaml naming the tiny models (and ``extra`` top-level YAML)."""
    lines = ["models:"]
    for name, (repo_id, _) in MODELS.items():
        kind = "safetensors" if name == "tiny-st" else "onnx"
        lines.append(
            f"  {name}: {{model_id: {repo_id}, dimensions: 8, model_type: {kind}, "
            "max_sequence_length: 16}"
        )
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def manager(config: Path, endpoint: str) -> ModelManager:
    """A manager reading ``config``, talking to ``endpoint`` (a FaultProxy),
    with the functional check off (the weights are not a runnable graph)."""
    import os

    os.environ["HF_ENDPOINT"] = endpoint
    return ModelManager(load_config(config), functional=False)


CHILD_ENSURE = """
import json, os, sys
from caxton_models.config import load_config
from caxton_models.acquire.manager import ModelManager
from caxton_models import _core
name = sys.argv[1]
path, _ = ModelManager(load_config(), functional=False).ensure(name)
print(json.dumps({"path": str(path), "onnx": _core.sha256_file(path / "onnx" / "model.onnx")}))
"""
