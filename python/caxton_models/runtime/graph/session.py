"""An ONNX Runtime session over a built graph, backed by the caller's buffers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import onnx

if TYPE_CHECKING:
    import onnxruntime as ort

    from caxton_models.runtime.graph.encoder import EncoderGraph

__all__ = ["create_session", "external_initializers", "reference_file"]


def external_initializers(
    options: ort.SessionOptions, external: Sequence[tuple[str, npt.NDArray[np.float32]]]
) -> list[Any]:
    """Hands ``external`` to ``options`` as OrtValues over the arrays' own
    memory and returns those OrtValues: they (and the arrays) must outlive
    every session made with ``options``.

    The arrays are not copied on the Python side, but ORT 1.32 copies each
    one into its own memory at session creation (measured: a 44 MiB embedding
    table added 46 MiB of anonymous memory), and Gemm kernels pre-pack their
    weights into yet another copy. :func:`reference_file` avoids the first
    copy for float32 checkpoints."""
    import onnxruntime as ort

    if not external:
        return []
    # ortvalue_from_numpy wraps C-contiguous memory; anything else is copied first.
    values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)) for _, a in external]
    options.add_external_initializers([n for n, _ in external], values)
    return values


def create_session(
    graph: EncoderGraph,
    options: ort.SessionOptions | None = None,
    *,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> ort.InferenceSession:
    """An InferenceSession of ``graph``, its external weights supplied from
    the caller's arrays. ``options`` is modified (external initializers are
    added) and so should not be reused for another graph. The session keeps
    the OrtValues alive (attribute ``caxton_weights``)."""
    import onnxruntime as ort

    so = options if options is not None else ort.SessionOptions()
    values = external_initializers(so, graph.external)
    session = ort.InferenceSession(graph.model.SerializeToString(), so, providers=list(providers))
    session.caxton_weights = values
    return session


def reference_file(graph: EncoderGraph, file_name: str, offsets: Mapping[str, int]) -> EncoderGraph:
    """``graph`` with its external weights pointing into ``file_name`` (e.g.
    ``model.safetensors``) at ``offsets[name]`` (absolute byte offsets), so
    that ONNX Runtime memory-maps them from the file itself.

    Measured with ORT 1.32: ``add_external_initializers`` copies each supplied
    buffer into ORT's own memory, while initializers stored in an external
    file are mapped in place (the pages stay shared and clean). ORT only opens
    files in the saved graph's own folder, so save the result there. Only
    little-endian float32 tensors can be referenced; weights not in
    ``offsets`` (F16/BF16 widened in memory) stay in ``external``."""
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    arrays = dict(graph.external)
    for tensor in model.graph.initializer:
        if tensor.name not in offsets or tensor.name not in arrays:
            continue
        del tensor.external_data[:]
        for key, value in (
            ("location", file_name),
            ("offset", str(offsets[tensor.name])),
            ("length", str(arrays[tensor.name].nbytes)),
        ):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    kept = [(n, a) for n, a in graph.external if n not in offsets]
    return dataclasses.replace(graph, model=model, external=kept)
