"""An ONNX Runtime session over a built graph, backed by the caller's buffers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnxruntime as ort

    from caxton_models.runtime.graph.encoder import EncoderGraph

__all__ = ["create_session", "external_initializers"]


def external_initializers(
    options: ort.SessionOptions, external: Sequence[tuple[str, npt.NDArray[np.float32]]]
) -> list[Any]:
    """Hands ``external`` to ``options`` as OrtValues over the arrays' own
    memory and returns those OrtValues: they (and the arrays) must outlive
    every session made with ``options``.

    On CPU, ORT uses a supplied initializer in place (onnxruntime PR #29013
    describes that path) rather than copying it; MatMul/Gemm kernels still
    pre-pack their weights into a private copy at session creation."""
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
