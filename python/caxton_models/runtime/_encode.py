"""``Embedder.encode``: sentence-transformers' ``encode`` for code moving
from it, with its names and semantics where they make sense without torch.

As sentence-transformers 5/6 does: a str gives one 1-D vector, a list a 2-D
array; ``prompt`` wins over ``prompt_name``, and with neither the model's
``default_prompt_name`` applies; ``truncate_dim`` (else the width the
Embedder was loaded with) keeps the first N values *without*
re-normalising, and ``normalize_embeddings`` normalises after that;
``precision`` quantises as ``quantize_embeddings`` does, with int8/uint8
ranges taken from the embeddings of the call itself (or ``ranges`` /
``calibration_embeddings``). Torch tensors (``convert_to_tensor``) and other
outputs than ``sentence_embedding`` are refused with a typed error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from caxton_models.errors import InvalidArgument
from caxton_models.runtime._prompts import Prompts, check_dimensions, prompt_length

if TYPE_CHECKING:
    from caxton_models.runtime._modelconfig import ModelConfig

__all__ = ["PRECISIONS", "EncodeMixin", "quantize_embeddings"]

log = logging.getLogger("caxton_models")


class _Host(Protocol):
    """What encode() reads of the Embedder it is mixed into: typed here, so this
    module never imports the embedder (which imports it)."""

    config: ModelConfig
    dimensions: int
    full_dimensions: int
    model_id: str
    normalizes: bool
    prompts: Prompts
    _tokenizer: Any

    def _embed(
        self, texts: Sequence[str] | str, prompt: str, skip: int, norm: bool,
        batch_size: int | None,
    ) -> npt.NDArray[np.float32]: ...  # fmt: skip


PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
#: Texts per embed() call while a progress bar is shown.
_PROGRESS_CHUNK = 1024


def quantize_embeddings(
    embeddings: npt.NDArray[Any],
    precision: str,
    ranges: npt.NDArray[Any] | None = None,
    calibration_embeddings: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any]:
    """sentence-transformers' ``quantize_embeddings`` on a 2-D float array:
    int8/uint8 map each dimension's [min, max] (from ``ranges`` [2, dim], else
    ``calibration_embeddings``, else ``embeddings``) onto 256 steps; binary
    packs the signs (> 0) into bits, ``binary`` shifted into int8."""
    embeddings = np.asarray(embeddings)
    if embeddings.dtype in (np.uint8, np.int8):
        raise InvalidArgument("embeddings to quantize must be float, not int8 or uint8")
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision in ("int8", "uint8"):
        if ranges is None:
            source = embeddings if calibration_embeddings is None else calibration_embeddings
            ranges = np.vstack((np.min(source, axis=0), np.max(source, axis=0)))
        starts = ranges[0, :]
        steps = (ranges[1, :] - ranges[0, :]) / 255
        with np.errstate(divide="ignore", invalid="ignore"):  # a constant dimension
            if precision == "uint8":
                return ((embeddings - starts) / steps).astype(np.uint8)
            return ((embeddings - starts) / steps - 128).astype(np.int8)
    if precision == "binary":
        return (np.packbits(embeddings > 0).reshape(embeddings.shape[0], -1) - 128).astype(np.int8)
    if precision == "ubinary":
        return np.packbits(embeddings > 0).reshape(embeddings.shape[0], -1)
    raise InvalidArgument(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")


def _check(
    output_value: str | None, precision: str, convert_to_tensor: bool, device: str | None
) -> None:
    if convert_to_tensor:
        raise InvalidArgument(
            "convert_to_tensor=True asks for a torch tensor; caxton runs without torch. "
            "Take the numpy array (the default) and use torch.from_numpy(...) if you need one."
        )
    if output_value != "sentence_embedding":
        raise InvalidArgument(
            f"output_value={output_value!r} is not supported: encode() returns sentence "
            "embeddings only (output_value='sentence_embedding')"
        )
    if precision not in PRECISIONS:
        raise InvalidArgument(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if device not in (None, "cpu"):
        raise InvalidArgument(f"device={device!r}: caxton runs on the CPU only (device='cpu')")


def _progress(show: bool | None, total: int) -> Any:
    if show is None:
        show = log.getEffectiveLevel() <= logging.INFO
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        log.info("show_progress_bar needs tqdm (pip install tqdm); encoding without one")
        return None
    return tqdm(total=total, desc="Texts", unit="text")


class EncodeMixin:
    """sentence-transformers' encode, encode_query and encode_document on the Embedder."""

    prompts: Prompts

    def encode(
        self,
        sentences: str | Sequence[str] | npt.NDArray[Any],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
    ) -> Any:
        """``SentenceTransformer.encode``, same arguments in the same order: a
        str gives a 1-D float32 vector, a list an (n, dim) array (a list of
        1-D arrays with ``convert_to_numpy=False``). ``prompt`` / ``prompt_name``
        / the model's ``default_prompt_name``; ``truncate_dim`` keeps the
        first N values (not re-normalised, as there); ``normalize_embeddings``;
        ``precision`` ``int8``/``uint8``/``binary``/``ubinary`` quantises as
        ``quantize_embeddings``; ``batch_size`` caps rows per model call;
        ``show_progress_bar`` uses tqdm when installed. ``convert_to_tensor``
        (torch) and another ``output_value`` raise :class:`InvalidArgument`."""
        # The mixin's own object: emb._x below is self._x, typed as its host.
        emb = cast("_Host", self)
        _check(output_value, precision, convert_to_tensor, device)
        was_string = isinstance(sentences, str) or not hasattr(sentences, "__len__")
        texts: list[str] = [sentences] if was_string else list(sentences)  # type: ignore[list-item]
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgument(f"batch_size must be a positive whole number, not {batch_size!r}")
        text = emb.prompts.resolve(prompt_name, prompt) or ""
        keep = emb.config.include_prompt
        skip = prompt_length(emb._tokenizer, text) if text and not keep else 0  # noqa: SLF001
        width = check_dimensions(emb.model_id, emb.full_dimensions, truncate_dim or emb.dimensions)
        if not texts:
            return np.asarray([], dtype=np.float32) if convert_to_numpy else []
        bar = _progress(show_progress_bar, len(texts))
        step = _PROGRESS_CHUNK if bar is not None else len(texts)
        parts = []
        try:
            for start in range(0, len(texts), step):
                chunk = texts[start : start + step]
                parts.append(emb._embed(chunk, text, skip, emb.normalizes, batch_size))  # noqa: SLF001
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if width < out.shape[1]:
            out = np.ascontiguousarray(out[:, :width])
        if normalize_embeddings:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
        result: Any = quantize_embeddings(out, precision) if precision != "float32" else out
        if not convert_to_numpy:
            result = list(result)
        return result[0] if was_string else result

    def encode_query(
        self,
        sentences: str | Sequence[str] | npt.NDArray[Any],
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """``encode`` with the model's ``query`` prompt when none is given."""
        if prompt_name is None and prompt is None:
            prompt_name = self.prompts.name_for_kind("query")
        return self.encode(sentences, prompt_name, prompt, **kwargs)

    def encode_document(
        self,
        sentences: str | Sequence[str] | npt.NDArray[Any],
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """``encode`` with the model's ``document`` (else ``passage``, else
        ``corpus``) prompt when none is given."""
        if prompt_name is None and prompt is None:
            prompt_name = self.prompts.name_for_kind("passage")
        return self.encode(sentences, prompt_name, prompt, **kwargs)
