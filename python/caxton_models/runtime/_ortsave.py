"""ONNX Runtime's optimiser as a file-to-file step: what the int8 quantiser
reads (level BASIC) and the graph cache keeps (level EXTENDED). Below both
``_quant`` and ``_optimize``, which each save through it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ort_save"]


def ort_save(src: Path, dest: Path, *, extended: bool) -> None:
    """``src`` as ONNX Runtime's optimiser (level EXTENDED, else BASIC) saves
    it, to ``dest`` with the weights in ``<name>.data``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        if extended
        else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    )
    so.optimized_model_filepath = str(dest)
    so.log_severity_level = 3
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", dest.name + ".data"
    )
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
