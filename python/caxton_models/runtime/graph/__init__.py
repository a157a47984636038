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

from typing import TYPE_CHECKING

from caxton_models._lazy import lazy_exports

# pipeline is plain numpy/JSON and loads eagerly: every model needs it. The
# builders import the onnx package (about 0.8 s of extension loading, mostly
# ml_dtypes) that only a graph build needs, and the architecture table only a
# build or a config check reads, so a model that ships its ONNX export never
# pays for them: they load on first use.
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

if TYPE_CHECKING:
    from caxton_models.runtime.graph.encoder import EncoderGraph, build_encoder
    from caxton_models.runtime.graph.head import build_sentence_encoder
    from caxton_models.runtime.graph.session import (
        create_session,
        external_initializers,
        reference_file,
    )
    from caxton_models.runtime.graph.spec import SUPPORTED, EncoderSpec, encoder_spec

__getattr__ = lazy_exports(
    __name__,
    {
        "EncoderGraph": f"{__name__}.encoder",
        "build_encoder": f"{__name__}.encoder",
        "build_sentence_encoder": f"{__name__}.head",
        "create_session": f"{__name__}.session",
        "external_initializers": f"{__name__}.session",
        "reference_file": f"{__name__}.session",
        # The architecture table: read when a graph is built or a config checked.
        "SUPPORTED": f"{__name__}.spec",
        "EncoderSpec": f"{__name__}.spec",
        "encoder_spec": f"{__name__}.spec",
    },
)


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
