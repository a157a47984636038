"""Graphs derived from a model's ONNX file, built once and kept in the store's
graph cache (never in the model folder): ONNX Runtime's own optimised graph,
and the int8 graph quantised from it."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from caxton_models.config import env_cache_dir
from caxton_models.runtime._ortsave import ort_save
from caxton_models.runtime._quant import INT8_RECIPE, quantize
from caxton_models.store import graph_dir_for, publish_graph

log = logging.getLogger("caxton_models.runtime")

__all__ = [
    "INT8_RECIPE",
    "build_from_safetensors",
    "cached_graph_path",
    "graph_notes",
    "linked_weights",
    "ort_optimize",
    "quantize",
]

#: Beside a derived graph ``<name>.onnx``: what made it (e.g. the int8 recipe).
NOTE_SUFFIX = ".json"


def _graph_key(onnx_path: Path, variant: str) -> str:
    import onnxruntime as ort

    st = onnx_path.stat()
    raw = f"{onnx_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{variant}|ort{ort.__version__}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def cached_graph_path(
    onnx_path: Path, model_dir: Path, variant: str, cache_dir: Path | None = None
) -> Path:
    """Where the derived graph lives: ``cache_dir`` when given, else the store's
    graph cache of the model (or of the default cache, for a folder outside
    any cache: a folder the user pointed us at is never written to)."""
    name = f"{onnx_path.stem}.{variant}.{_graph_key(onnx_path, variant)}.onnx"
    if cache_dir is not None:
        return Path(cache_dir) / name
    return graph_dir_for(model_dir, env_cache_dir()) / name


def ort_optimize(src: Path, dest: Path, note: Mapping[str, Any] | None = None) -> None:
    """ONNX Runtime's own graph optimisations, applied once and saved to
    ``dest`` with the weights in ``<name>.data`` (and ``note``, what made
    the graph, in ``<name>.json``: published with it, never without it).

    Level EXTENDED holds only rewrites that are valid on any CPU (the layout
    rewrites of level ALL are machine-specific and do nothing for
    transformers). Measured on MiniLM, 2 cores: this graph ran 5-8% faster
    than the onnxruntime.transformers fusions (its SkipLayerNormalization
    and Attention kernels were slower than ORT's plain LayerNormalization
    and MatMuls), and a session opens in ~40 ms instead of ~200 ms for the
    inline 90 MB protobuf."""

    def write(path: Path) -> None:
        ort_save(src, path, extended=True)
        if note is not None:
            path.with_name(path.name + NOTE_SUFFIX).write_text(json.dumps(dict(note)))

    publish_graph(write, dest)


def graph_notes(graph_dir: Path) -> dict[str, dict[str, Any]]:
    """The notes of the derived graphs in ``graph_dir`` whose graph is there
    too, by graph file name; an unreadable note is left out."""
    notes: dict[str, dict[str, Any]] = {}
    for f in sorted(graph_dir.glob("*.onnx" + NOTE_SUFFIX)):
        graph = f.with_name(f.name[: -len(NOTE_SUFFIX)])
        try:
            note = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if graph.is_file() and isinstance(note, dict):
            notes[graph.name] = note
    return notes


def build_from_safetensors(weights_path: Path, dest: Path, build: Any = None) -> None:
    """The plain ONNX graph of the model whose ``config.json`` sits beside
    ``weights_path``, written to ``dest``. ``build(config, tensors,
    external=True)`` makes the graph (default: ``build_encoder``; the
    rerank and SPLADE heads pass theirs).

    Its float32 weights are not copied: the graph points at their byte ranges
    in ``model.safetensors``, hard-linked beside it (same file, same pages),
    so ONNX Runtime maps them from the page cache that every process loading
    this model shares. F16/BF16 weights are widened one tensor at a time into
    ``<graph>.data`` beside the graph, which ONNX Runtime maps the same way:
    building never holds more than one widened tensor in memory. Where a hard
    link cannot be made (another file system), every weight goes to that file."""
    import onnx

    from caxton_models.errors import InvalidModelFormat
    from caxton_models.runtime.graph import build_encoder, reference_file
    from caxton_models.runtime.graph._widen import MappedTensors

    try:
        config = json.loads((weights_path.parent / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidModelFormat(
            f"cannot read {weights_path.parent / 'config.json'}: {e}; the graph is built from it"
        ) from None

    def write(path: Path) -> None:
        # One link per graph: graphs of different folders share a graph
        # folder (all folders outside a cache share one), and a shared name
        # let the next build replace the weights an earlier graph points into.
        link = linked_weights(path)
        linked = _link_weights(weights_path, link)
        side_file = path.with_name(path.name + ".data")
        tensors = MappedTensors(link if linked else weights_path, side_file, in_place=linked)
        try:
            graph = (build or build_encoder)(config, tensors, external=True)
        finally:
            tensors.close()
        for file_name, offsets in tensors.offsets().items():
            graph = reference_file(graph, file_name, offsets)
        _embed(graph.model, graph.external)
        onnx.save_model(graph.model, str(path))

    publish_graph(write, dest)


def linked_weights(graph: Path) -> Path:
    """The hard link to its weights that a graph built from safetensors maps."""
    return graph.with_suffix(".safetensors")


def _link_weights(weights_path: Path, link: Path) -> bool:
    import os

    try:
        os.link(weights_path, link)
    except OSError as e:
        log.info("weights of %s not linked into the graph cache (%s): copied beside the graph",
                 weights_path, e)  # fmt: skip
        return False
    return True


def _embed(model: Any, arrays: Sequence[tuple[str, Any]]) -> None:
    """Store the given initializers' bytes in the graph itself."""
    import numpy as np
    import onnx

    by_name = {t.name: t for t in model.graph.initializer}
    for name, array in arrays:
        tensor = by_name[name]
        tensor.ClearField("external_data")
        tensor.data_location = onnx.TensorProto.DEFAULT
        tensor.raw_data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
