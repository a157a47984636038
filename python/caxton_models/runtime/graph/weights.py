"""Checkpoint tensors by their transformers names, whatever prefix the
checkpoint saved them under (``bert.``, ``roberta.``, ``0.auto_model.``, none)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import numpy.typing as npt

from caxton_models.errors import InvalidModelFormat

__all__ = ["LazyTensors", "Weights", "require_f32"]

F32Array = npt.NDArray[np.float32]

#: Old TF-converted checkpoints name LayerNorm parameters gamma/beta;
#: transformers renames them on load, and so do we.
_LEGACY_SUFFIXES = {".weight": ".gamma", ".bias": ".beta"}


def require_f32(name: str, array: np.ndarray, where: str) -> F32Array:
    """``array`` as float32, or a clear error: the caller (the Rust reader)
    widens F16/BF16 to F32 before building, so anything else is a bug there
    or a checkpoint we cannot run."""
    if not isinstance(array, np.ndarray):
        raise InvalidModelFormat(
            f"tensor {name!r} of {where} is a {type(array).__name__}, not a numpy array"
        )
    if array.dtype != np.float32:
        raise InvalidModelFormat(
            f"tensor {name!r} of {where} is {array.dtype}, the graph builder takes float32 "
            "only: convert F16/BF16 weights to F32 when reading them"
        )
    return array


class LazyTensors(Mapping[str, np.ndarray]):
    """Tensors read only when looked up: ``load(name)`` runs on each lookup
    and nothing is kept here, so a checkpoint whose F16/BF16 tensors must be
    widened to float32 is widened one tensor at a time, as the graph builder
    takes them, never the whole file at once."""

    def __init__(self, names: Iterable[str], load: Callable[[str], np.ndarray]) -> None:
        self._names = tuple(names)
        self._known = frozenset(self._names)
        self._load = load

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._known:
            raise KeyError(name)
        return self._load(name)

    def __contains__(self, name: object) -> bool:
        return name in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class Weights:
    """The tensors of one model under ``prefix``; ``get`` raises a typed
    error naming the missing tensor."""

    def __init__(self, tensors: Mapping[str, np.ndarray], prefix: str, model: str) -> None:
        self.tensors = tensors
        self.prefix = prefix
        self.model = model

    @classmethod
    def locate(cls, tensors: Mapping[str, np.ndarray], anchor: str, model: str) -> Weights:
        """Finds the prefix from the one tensor every checkpoint of the
        architecture has (``anchor``, e.g. the word embeddings)."""
        found = sorted(
            (k[: -len(anchor)] for k in tensors if k.endswith(anchor)),
            key=len,
        )
        found = [p for p in found if p == "" or p.endswith(".")]
        if not found:
            sample = ", ".join(sorted(tensors)[:5]) or "none"
            raise InvalidModelFormat(
                f"{model} weights have no tensor named {anchor!r} (under any prefix); "
                f"{len(tensors)} tensors, e.g. {sample}: is this checkpoint a {model}?"
            )
        return cls(tensors, found[0], model)

    def _key(self, name: str) -> str | None:
        key = self.prefix + name
        if key in self.tensors:
            return key
        for new, old in _LEGACY_SUFFIXES.items():
            if key.endswith(new) and key[: -len(new)] + old in self.tensors:
                return key[: -len(new)] + old
        return None

    def has(self, name: str) -> bool:
        return self._key(name) is not None

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> F32Array:
        """The float32 tensor ``name`` (checked against ``shape`` if given)."""
        key = self._key(name)
        if key is None:
            raise InvalidModelFormat(
                f"{self.model} weights lack tensor {self.prefix + name!r}: "
                "the checkpoint is incomplete or not of the architecture its config.json says"
            )
        array = require_f32(key, self.tensors[key], f"the {self.model} checkpoint")
        if shape is not None and tuple(array.shape) != shape:
            raise InvalidModelFormat(
                f"tensor {key!r} has shape {tuple(array.shape)}, config.json implies {shape}"
            )
        return array
