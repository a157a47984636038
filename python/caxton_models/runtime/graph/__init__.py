"""ONNX graphs of transformer encoders built from config.json and weights.

For models that ship only ``model.safetensors``: the Rust core maps the file
and hands its tensors (widened to float32) to :func:`build_encoder`, which
writes the encoder as standard ONNX ops (opset 17) whose weights stay in
those buffers; :func:`create_session` supplies them to ONNX Runtime (which
copies them), or :func:`reference_file` points the graph at the float32
tensors' byte ranges in ``model.safetensors`` itself, which ONNX Runtime
memory-maps without a copy once the graph is saved beside that file.
:func:`read_sentence_transformers` reads what comes after the encoder
(pooling, Dense, Normalize), which :func:`apply_pipeline` runs in numpy or
:func:`build_sentence_encoder` appends to the graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# pipeline and spec are plain numpy/JSON and load eagerly: every model needs
# them. The builders import the onnx package (about 0.8 s of extension
# loading, mostly ml_dtypes) that only a graph build needs, so a model that
# ships its ONNX export must never pay for them: they load on first use.
from caxton_models.runtime.graph.pipeline import (
    DenseLayer,
    Normalize,
    PoolingMode,
    SentencePipeline,
    TensorReader,
    apply_pipeline,
    dense_forward,
    pool,
    read_pooling,
    read_sentence_transformers,
)
from caxton_models.runtime.graph.spec import SUPPORTED, EncoderSpec, encoder_spec

if TYPE_CHECKING:
    from caxton_models.runtime.graph.encoder import EncoderGraph, build_encoder
    from caxton_models.runtime.graph.head import build_sentence_encoder
    from caxton_models.runtime.graph.session import (
        create_session,
        external_initializers,
        reference_file,
    )

# name -> the submodule that defines it, imported on first access (PEP 562).
_LAZY = {
    "EncoderGraph": "encoder",
    "build_encoder": "encoder",
    "build_sentence_encoder": "head",
    "create_session": "session",
    "external_initializers": "session",
    "reference_file": "session",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "SUPPORTED",
    "DenseLayer",
    "EncoderGraph",
    "EncoderSpec",
    "Normalize",
    "PoolingMode",
    "SentencePipeline",
    "TensorReader",
    "apply_pipeline",
    "build_encoder",
    "build_sentence_encoder",
    "create_session",
    "dense_forward",
    "encoder_spec",
    "external_initializers",
    "pool",
    "read_pooling",
    "read_sentence_transformers",
    "reference_file",
]
