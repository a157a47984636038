"""What an ONNX graph is fed, from its own input list.

Exports differ: encoders take ``input_ids``, ``attention_mask`` and maybe
``token_type_ids``; decoder exports (optimum's Qwen, Llama...) also take
``position_ids`` and, when exported with a cache, ``past_key_values.*`` and
``use_cache_branch``. Each input the graph names is made here, in the dtype
it declares; an input nobody knows how to fill is a typed error at load,
not a shape error at the first batch.

Padding: the core's batch planner pads on the right; a tokenizer that says
``padding_side: left`` gets each row moved to the right end, so the graph
sees what transformers would give it. Position ids count real tokens
(``cumsum(mask) - 1``, 1 on padding, as optimum computes them), which is
right for either side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from caxton_models.errors import InvalidModelFormat

__all__ = ["GraphFeeds", "left_align", "output_name", "position_ids"]

Int64Array = npt.NDArray[np.int64]
_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
#: Outputs that hold token vectors or the sentence vector, best first.
_OUTPUTS = ("last_hidden_state", "token_embeddings", "sentence_embedding")


def left_align(mask: Int64Array, *arrays: Int64Array) -> list[Int64Array]:
    """Right-padded rows moved to the right end (left padding); ``mask`` first."""
    seq = mask.shape[1]
    shift = seq - mask.sum(axis=1, keepdims=True)
    index = (np.arange(seq)[None, :] - shift) % seq
    return [np.take_along_axis(a, index, axis=1) for a in (mask, *arrays)]


def position_ids(mask: Int64Array) -> Int64Array:
    """0, 1, 2... over the real tokens of each row, whichever side is padded."""
    pos = np.cumsum(mask, axis=1) - 1
    pos[mask == 0] = 1
    return pos


def output_name(outputs: Sequence[Any]) -> str:
    names = [o.name for o in outputs]
    return next((n for n in _OUTPUTS if n in names), names[0])


@dataclass(frozen=True)
class _Extra:
    """An input filled from nothing but the batch shape."""

    name: str
    dtype: Any
    make: Callable[[int, Any], np.ndarray]


def _empty_cache(shape: Sequence[Any], dtype: Any) -> Callable[[int, Any], np.ndarray]:
    # [batch, kv_heads, past_len, head_dim]: a fixed number stays, the batch
    # axis is the batch, every other symbolic axis (the past length) is 0.
    def make(batch: int, _: Any) -> np.ndarray:
        dims = [batch if i == 0 else d if isinstance(d, int) else 0 for i, d in enumerate(shape)]
        return np.zeros(dims, dtype)

    return make


class GraphFeeds:
    """Builds one batch's feed for a graph with the given inputs."""

    def __init__(self, inputs: Sequence[Any], *, left_padding: bool, where: str = "graph") -> None:
        self.left_padding = left_padding
        self._dtypes: dict[str, Any] = {}
        self._extra: list[_Extra] = []
        for i in inputs:
            name, kind = i.name, str(i.type)
            if name in ("input_ids", "attention_mask", "token_type_ids", "position_ids"):
                dtype = _DTYPES.get(kind)
                if dtype is None or dtype is np.bool_:
                    raise InvalidModelFormat(f"{where}: input {name!r} is {kind}, expected int64")
                self._dtypes[name] = dtype
            elif name.startswith(("past_key_values", "past_key", "past_value")):
                dtype = np.float16 if "float16" in kind else np.float32
                self._extra.append(_Extra(name, dtype, _empty_cache(list(i.shape), dtype)))
            elif name == "use_cache_branch":
                self._extra.append(_Extra(name, np.bool_, lambda b, _: np.zeros(1, np.bool_)))
            else:
                raise InvalidModelFormat(
                    f"{where} takes an input {name!r} ({kind}) that caxton cannot fill: it feeds "
                    "input_ids, attention_mask, token_type_ids, position_ids and an empty "
                    "past_key_values cache. Export the model for feature extraction."
                )
        if "input_ids" not in self._dtypes:
            raise InvalidModelFormat(f"{where} has no input_ids input: not a text model export")
        # The common case (an encoder taking int64) needs no casting pass.
        self.plain = not self._extra and all(d is np.int64 for d in self._dtypes.values())

    def __call__(
        self, ids: Int64Array, mask: Int64Array, types: Int64Array
    ) -> tuple[dict[str, np.ndarray], Int64Array]:
        """(feed, the attention mask as the graph saw it)."""
        if self.left_padding:
            mask, ids, types = left_align(mask, ids, types)
        wanted = self._dtypes
        feeds: dict[str, np.ndarray] = {"input_ids": ids}
        if "attention_mask" in wanted:
            feeds["attention_mask"] = mask
        if "token_type_ids" in wanted:
            feeds["token_type_ids"] = types
        if "position_ids" in wanted:
            feeds["position_ids"] = position_ids(mask)
        if not self.plain:
            for name, value in feeds.items():
                if value.dtype != wanted[name]:
                    feeds[name] = value.astype(wanted[name])
            for extra in self._extra:
                feeds[extra.name] = extra.make(ids.shape[0], None)
        return feeds, mask
