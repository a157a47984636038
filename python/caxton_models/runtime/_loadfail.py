"""When ONNX Runtime will not load a model: its errors as a typed
:class:`~caxton_models.errors.ModelLoadError`, and the model's other weights
format to try instead.

onnxruntime's load errors (InvalidProtobuf, InvalidGraph, Fail,
RuntimeException, NoSuchFile, ...) derive from ``Exception`` only, so without
this mapping they pass every ``except`` of the repair and fallback paths.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from caxton_models.errors import ModelLoadError
from caxton_models.runtime._modelconfig import SAFETENSORS, ModelConfig

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["SAFETENSORS", "is_out_of_memory", "open_session", "safetensors_config"]

# How ONNX Runtime words an allocation failure it turns into a RuntimeException.
_OOM_WORDS = ("bad_alloc", "failed to allocate", "out of memory")
_MAX_QUOTE = 600


def _is_ort_error(err: BaseException) -> bool:
    return type(err).__module__.startswith("onnxruntime")


def is_out_of_memory(err: BaseException) -> bool:
    """A load that ran out of memory (Python's or ONNX Runtime's allocator)."""
    if isinstance(err, MemoryError):
        return True
    if isinstance(err, ModelLoadError):
        return err.out_of_memory
    return _is_ort_error(err) and any(w in str(err).lower() for w in _OOM_WORDS)


def _load_error(graph: Path, model_dir: Path, err: BaseException) -> ModelLoadError:
    import onnxruntime

    said = " ".join(str(err).split()) or "no message"
    if len(said) > _MAX_QUOTE:
        said = said[:_MAX_QUOTE] + "..."
    kind = type(err).__name__
    if is_out_of_memory(err):
        todo = (
            "free memory (fewer loaded models: memory.loaded_models), load it with "
            "quantize=True, or use a smaller model; the fallback chain moves to the next "
            "smaller one"
        )
        return ModelLoadError(
            f"out of memory loading {graph} ({kind}: {said}): {todo}",
            path=str(graph),
            ort_error=kind,
            out_of_memory=True,
        )
    if graph.absolute().is_relative_to(model_dir.absolute()):
        todo = (
            f"the file is corrupt or needs operators onnxruntime {onnxruntime.__version__} "
            "lacks: re-verify it (`caxton model verify NAME --full --repair`), upgrade "
            f"onnxruntime, or run the model from its {SAFETENSORS}"
        )
    else:
        todo = f"this graph was derived from {model_dir} by caxton; delete it and it is rebuilt"
    return ModelLoadError(
        f"ONNX Runtime cannot load {graph} ({kind}: {said}): {todo}",
        path=str(graph),
        ort_error=kind,
    )


def open_session(
    graph: Path, options: ort.SessionOptions, *, model_dir: Path
) -> ort.InferenceSession:
    """An ONNX Runtime CPU session of ``graph``; a refusal (or running out of
    memory) is a :class:`ModelLoadError` naming the file and what ORT said."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except MemoryError as e:
        raise _load_error(graph, model_dir, e) from e
    except Exception as e:
        if not _is_ort_error(e):
            raise
        raise _load_error(graph, model_dir, e) from e


def safetensors_config(config: ModelConfig) -> ModelConfig | None:
    """``config`` running from the folder's ``model.safetensors`` (the graph
    built by runtime/graph) instead of its shipped ONNX graph; None when
    there is no such file or the folder already runs from it."""
    weights = config.model_dir / SAFETENSORS
    if config.onnx_path is None or not weights.is_file():
        return None
    return replace(config, onnx_path=None, weights_path=weights, pre_optimized=False)
