"""Graphs derived from a model's ONNX file, built once and kept in the store's
graph cache (never in the model folder): ONNX Runtime's own optimised graph,
and the int8 graph quantised from it."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from caxton_models.config import env_cache_dir
from caxton_models.store import graph_dir_for, publish_graph

log = logging.getLogger("caxton_models.runtime")

#: int8 graphs keep the first 1/N of the FFN down-projections in float32.
KEEP_FP32_DIVISOR = 3


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


def ort_optimize(src: Path, dest: Path) -> None:
    """ONNX Runtime's own graph optimisations, applied once and saved to
    ``dest`` with the weights in ``<name>.data``.

    Level EXTENDED holds only rewrites that are valid on any CPU (the layout
    rewrites of level ALL are machine-specific and do nothing for
    transformers). Measured on MiniLM, 2 cores: this graph ran 5-8% faster
    than the onnxruntime.transformers fusions (its SkipLayerNormalization
    and Attention kernels were slower than ORT's plain LayerNormalization
    and MatMuls), and a session opens in ~40 ms instead of ~200 ms for the
    inline 90 MB protobuf."""
    import onnxruntime as ort

    def write(path: Path) -> None:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(path)
        so.log_severity_level = 3
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", path.name + ".data"
        )
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])

    publish_graph(write, dest)


def _load_onnx(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def _down_projections(model: Any) -> list[str]:
    """MatMul nodes whose constant weight narrows (e.g. 1536 -> 384): the FFN
    output projections, in graph order. Their inputs are GELU outputs with
    heavy tails, which one per-tensor activation scale serves badly."""
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul"
        and len(shapes.get(n.input[1], ())) == 2
        and shapes[n.input[1]][0] > shapes[n.input[1]][1]
    ]


def quantize(src: Path, dest: Path, exclude: Sequence[str] | None = None) -> None:
    """Dynamic int8 quantization with per-channel weight scales, written to
    ``dest`` (an intermediate: ``ort_optimize`` makes the cached graph);
    ``exclude`` (default: a third of the FFN down-projections) stays float32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if exclude is None:
        # The first third of the layers' FFN down-projections stay float32.
        # Measured on MiniLM (PyPI summaries vs the reference, min / mean
        # cosine): all int8 0.955 / 0.992; layer 0 kept 0.956; layers 0-1
        # kept 0.970 / 0.994 (+3.5 MB); all six kept 0.979 / 0.996 but only
        # 1.16x fp32 speed; attention outputs kept instead 0.962.
        down = _down_projections(_load_onnx(src))
        exclude = down[: max(1, len(down) // KEEP_FP32_DIVISOR)]

    # quantize_dynamic logs advice about pre-processing on the root logger.
    quiet = _DropRecords("pre-processing before quantization")
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        quantize_dynamic(
            src,
            dest,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=list(exclude),
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.removeFilter(quiet)


class _DropRecords(logging.Filter):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle

    def filter(self, record: logging.LogRecord) -> bool:
        return self.needle not in record.getMessage()


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
    import json

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
