"""Which graph an Embedder runs: the shipped ONNX file or the one built from
``model.safetensors`` ("plain"), or ORT's optimised graph of it (int8 first
when asked), built once into the store's graph cache and used only when it
agrees with the plain one. Optimisation is a speed-up, never a reason not to
embed: any failure falls back to the plain graph.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from caxton_models.runtime._modelconfig import ModelConfig
from caxton_models.runtime._optimize import (
    INT8_RECIPE,
    build_from_safetensors,
    cached_graph_path,
    ort_optimize,
)
from caxton_models.runtime._optimize import quantize as quantize_graph

__all__ = ["GraphChoice"]

log = logging.getLogger("caxton_models.runtime.embedder")

#: (plain graph, candidate, least cosine similarity) -> whether they agree.
Agree = Callable[[Path, Path, float], bool]


def _drop_graph(graph: Path) -> None:
    graph.unlink(missing_ok=True)
    graph.with_name(graph.name + ".data").unlink(missing_ok=True)


@dataclass(frozen=True)
class GraphChoice:
    """The graph of ``config`` to run, with ``optimize`` / ``quantize``."""

    config: ModelConfig
    optimize: bool
    quantize: bool
    #: The graph cache (None: the store's default).
    cache: Path | None = None

    @property
    def _source(self) -> Path:
        source = self.config.onnx_path or self.config.weights_path
        assert source is not None  # ModelConfig.read found one or raised
        return source

    def _dest(self) -> Path:
        variant = f"ort-int8-{INT8_RECIPE.key}" if self.quantize else "ort"
        return cached_graph_path(self._source, self.config.model_dir, variant, self.cache)

    def plain(self) -> Path:
        """The unoptimised graph: the shipped ONNX file, or the one built from
        ``model.safetensors`` (in the graph cache; it maps the weights from
        the model's own file, so keeping it costs no disk)."""
        cfg = self.config
        if cfg.onnx_path is not None:
            return cfg.onnx_path
        dest = cached_graph_path(self._source, cfg.model_dir, "plain", self.cache)
        if not dest.is_file():
            build_from_safetensors(self._source, dest)
        return dest

    def ready(self) -> Path | None:
        """The graph to run if nothing needs building, else None."""
        if self.config.pre_optimized or not (self.optimize or self.quantize):
            return self.plain()
        if self.config.onnx_path is None and not self.quantize:
            # A graph built from safetensors runs as built. ORT applies the
            # same rewrites at session creation anyway (measured on Qwen3-0.6B:
            # the saved optimised graph opened no faster), while saving it cost
            # a second float32 copy of every weight on disk and, with its
            # parity check, ~70 of the ~100 s of a first load.
            return self.plain()
        dest = self._dest()
        if dest.is_file():
            return dest
        if dest.with_suffix(".rejected").exists():
            return self.plain()
        return None

    def prepare(self, agree: Agree) -> Path:
        """The graph to run: ORT's optimised graph (int8 first if asked),
        built once, checked against the plain graph by ``agree``, and
        cached; the plain graph when that fails."""
        ready = self.ready()
        if ready is not None:
            return ready
        dest = self._dest()
        plain = self.plain()
        try:
            with tempfile.TemporaryDirectory(prefix="caxton-graph") as tmp:
                src = plain
                if self.quantize:
                    src = Path(tmp) / "int8.onnx"
                    quantize_graph(plain, src)
                ort_optimize(src, dest, INT8_RECIPE.note() if self.quantize else None)
            # fp32 must match to parity; int8 only has to be the same model
            # (the registry's parity figures come from the full corpora).
            if not agree(plain, dest, 0.95 if self.quantize else 0.9999):
                log.warning("optimised graph of %s disagrees with the original: not used", plain)
                _drop_graph(dest)
                dest.with_suffix(".rejected").touch()
                return plain
            return dest
        except ImportError as e:
            log.info("graph optimisation skipped (%s); install onnx for int8", e)
        except Exception as e:  # optimisation is an optional speed-up, never a failure
            log.warning("graph optimisation of %s failed, using the plain graph: %s", plain, e)
        return plain
