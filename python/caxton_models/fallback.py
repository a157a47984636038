"""From a model name to a loaded :class:`~caxton_models.runtime.embedder.Embedder`,
walking the spec's fallback chain when the preferred model cannot be had.

The chain (``fallback_strategy``):

* ``auto``: the preferred model, then each of ``fallback_models`` in order,
  downloading where allowed; models of another dimension are skipped unless
  ``allow_dimension_mismatch``.
* ``strict``: the same order, but only models already installed (or bundled):
  no download is ever started.
* ``manual``: the preferred model only.

Every step that is skipped or fails is logged with its reason, and the
Embedder that comes back names the model that made it (``model_id``,
``space``), so vectors from different embedding spaces are never mixed
silently. When nothing loads, :class:`~caxton_models.errors.ModelUnavailable`
lists what was tried, unless degraded mode is on (``degraded: keyword``, or
``degraded="keyword"``): then the chain's last step is the spec's keyword-only
search, a :class:`~caxton_models.keyword.DegradedEmbedder` that says so
(``degraded``, ``space == "keyword:bm25"``) and returns sparse BM25 vectors,
never a dense array.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from caxton_models.errors import CaxtonError, ModelLoadError, ModelUnavailable
from caxton_models.resolve import BUNDLED_MODEL, Resolved, resolve
from caxton_models.runtime._loadfail import SAFETENSORS, is_out_of_memory

if TYPE_CHECKING:
    from caxton_models.acquire.manager import ModelManager
    from caxton_models.config import Config
    from caxton_models.keyword import DegradedEmbedder
    from caxton_models.runtime.embedder import Embedder

__all__ = ["LOAD_ERRORS", "load_with_fallback", "open_resolved"]

log = logging.getLogger("caxton_models.fallback")

#: Turns a resolved model into a loaded one (``caxton_models.load`` goes
#: through the process's loaded-model manager here).
Opener = Callable[[Resolved], "Embedder"]


def _chain(name: str, config: Config) -> list[str]:
    if config.fallback_strategy == "manual":
        return [name]
    out = [name]
    for n in config.fallback_models:
        if n not in out:
            out.append(n)
    return out


#: What a failed load may raise and the chain moves on from: caxton's typed
#: errors (ONNX Runtime's refusals arrive as ModelLoadError), the file
#: system's, and a few the runtime's libraries raise on malformed files.
LOAD_ERRORS = (CaxtonError, OSError, RuntimeError, ValueError, MemoryError)


def _skip_reason(
    candidate: str, wanted: Any, manager: ModelManager, max_mb: float | None = None
) -> str | None:
    """Why a fallback candidate is passed over without trying it, if it is
    (``max_mb``: a model at least this big ran out of memory)."""
    cfg = manager.config
    if candidate not in manager.registry:
        return f"{candidate}: not in the registry"
    spec = manager.registry.get(candidate)
    mismatch = wanted is not None and spec.dimensions != wanted.dimensions
    if mismatch and not cfg.allow_dimension_mismatch:
        return (
            f"{candidate}: {spec.dimensions} dimensions, not {wanted.dimensions} "
            "(allow_dimension_mismatch is false)"
        )
    if max_mb is not None and spec.size_mb >= max_mb and spec.size_mb > 0:
        return f"{candidate}: {spec.size_mb:g} MB, not smaller than a model that ran out of memory"
    strict = cfg.fallback_strategy == "strict" and not spec.bundled
    if strict and manager.cache.get(candidate) is None:
        return f"{candidate}: not installed (fallback_strategy: strict)"
    return None


def _smaller_than(candidate: str, manager: ModelManager, max_mb: float | None) -> float | None:
    """The size the rest of the chain must stay under once ``candidate`` ran
    out of memory. A size of 0 is unknown (a user entry without ``size_mb``):
    it sets no bound, and a candidate of unknown size is always tried."""
    size = manager.registry.get(candidate).size_mb if candidate in manager.registry else 0
    if size <= 0:
        return max_mb
    return size if max_mb is None else min(max_mb, size)


def _repaired(candidate: str, manager: ModelManager, err: BaseException) -> Resolved:
    """Recovery 1: a cached model that will not load is validated fully and
    exactly its bad files fetched again (ValidationFailed when its files
    verify: the cache is not at fault)."""
    manager.on_load_failure(candidate, err)
    return resolve(candidate, manager)


def _other_format(
    resolved: Resolved, refused: bool, fetch: Callable[[str], Resolved] | None
) -> Resolved | None:
    """Recovery 2, the spec's "try alternative model formats": a model whose
    ONNX graph ONNX Runtime refused runs from its ``model.safetensors``: the
    folder's, else (``fetch``) the repository's at the installed commit."""
    if not refused or resolved.weights is not None:
        return None
    here = (resolved.folder / SAFETENSORS).is_file()
    there = fetch is not None and resolved.spec is not None and SAFETENSORS in resolved.spec.weights
    if not (here or there):
        return None
    log.warning("ONNX Runtime refused %s; trying its %s", resolved.name, SAFETENSORS)
    if here:
        return replace(resolved, weights=SAFETENSORS)
    assert fetch is not None
    return fetch(SAFETENSORS)


def open_resolved(
    resolved: Resolved,
    open_model: Opener,
    repair: Callable[[BaseException], Resolved | None] | None = None,
    fetch: Callable[[str], Resolved] | None = None,
) -> Embedder:
    """The model, or its last error once each recovery that applies has been
    tried in turn: ``repair`` (given for a cached model), then the other
    weights format (``fetch(file)`` installs it, for a cached model without
    it). Running out of memory skips them: the chain's next, smaller model
    is the way out."""
    try:
        return open_model(resolved)
    except LOAD_ERRORS as err:
        if is_out_of_memory(err):
            raise
        error: BaseException = err
    refused = isinstance(error, ModelLoadError)
    steps: list[Callable[[], Resolved | None]] = [
        lambda: repair(error) if repair is not None else None,
        lambda: _other_format(resolved, refused, fetch),
    ]
    for step in steps:
        try:
            retry = step()
        except LOAD_ERRORS as err:  # a recovery that cannot run: the load error stays the news
            log.warning("cannot recover %s: %s", resolved.name, err)
            continue
        if retry is None:
            continue
        resolved = retry
        try:
            return open_model(resolved)
        except LOAD_ERRORS as err:
            if is_out_of_memory(err):
                raise
            error = err
            refused = refused or isinstance(err, ModelLoadError)
    raise error


def _open(candidate: str, manager: ModelManager, open_model: Opener) -> Embedder:
    resolved = resolve(candidate, manager)
    if resolved.spec is None or resolved.spec.bundled:
        return open_resolved(resolved, open_model)

    def fetch(weights: str) -> Resolved:
        manager.fetch_weights(candidate, weights)
        return resolve(candidate, manager)

    return open_resolved(
        resolved, open_model, lambda err: _repaired(candidate, manager, err), fetch
    )


def load_with_fallback(
    name_or_path: str | os.PathLike[str],
    *,
    manager: ModelManager,
    open_model: Opener,
    fallback: bool | None = None,
    degraded: str | bool | None = None,
) -> Embedder | DegradedEmbedder:
    """Load ``name_or_path``, or the first model of the fallback chain that
    loads. ``fallback=False`` (or a folder path) tries the one model only.
    ``degraded``: ``"keyword"`` or ``False``; ``None`` follows the config
    (which ``fallback=False`` turns off)."""
    name = os.fspath(name_or_path)
    mode = _degraded_mode(degraded, manager.config, fallback)
    is_registry = name in manager.registry
    chain = _chain(name, manager.config) if (is_registry and fallback is not False) else [name]
    wanted = manager.registry.get(name) if is_registry else None
    tried: list[str] = []
    max_mb: float | None = None  # set once a model ran out of memory
    for candidate in chain:
        skip = _skip_reason(candidate, wanted, manager, max_mb) if candidate != name else None
        if skip is not None:
            tried.append(skip)
            continue
        try:
            emb = _open(candidate, manager, open_model)
        except LOAD_ERRORS as err:
            if len(chain) == 1 and mode is None:
                raise
            reason = f"{candidate}: {type(err).__name__}: {err}"
            log.warning("cannot use %s", reason)
            tried.append(reason)
            if is_out_of_memory(err):
                max_mb = _smaller_than(candidate, manager, max_mb)
            continue
        if candidate != name:
            same = "the same" if (wanted and emb.space == wanted.space) else "a different"
            log.warning(
                "using fallback model %s instead of %s (%s embedding space); tried: %s",
                candidate,
                name,
                same,
                "; ".join(tried),
            )
        return emb
    if mode is not None:
        return _keyword_step(name, tried, manager.config)
    raise ModelUnavailable(
        f"no embedding model could be loaded for {name!r}. Tried: " + "; ".join(tried) + ". "
        f"Install one offline with `caxton model install`, allow downloads, or add "
        f"'{BUNDLED_MODEL}' to fallback_models; keyword-only search is the remaining option.",
        model=name,
        tried=tried,
    )


# --------------------------------------------------------------------------- degraded mode

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _degraded_mode(
    degraded: str | bool | None, config: Config, fallback: bool | None
) -> str | None:
    if degraded is None:
        return None if fallback is False else config.degraded
    if degraded is False:
        return None
    if degraded == "keyword":
        return "keyword"
    raise ValueError(f"degraded={degraded!r}: use 'keyword' (keyword-only search) or False")


def _keyword_step(name: str, tried: list[str], config: Config) -> DegradedEmbedder:
    """The spec's "Degraded Mode": BM25 keyword vectors, said loudly once per
    model and process, and counted every time."""
    from caxton_models import metrics
    from caxton_models.keyword import DegradedEmbedder

    emb = DegradedEmbedder(name, tried, language=config.degraded_language)
    metrics.count(metrics.DEGRADED_LOADS, model_id=name, mode="keyword")
    with _warned_lock:
        first = name not in _warned
        _warned.add(name)
    if first:
        log.warning(
            "DEGRADED MODE: no embedding model could be loaded for %s; embed() now returns "
            "BM25 keyword vectors (space %s), not embeddings. Tried: %s",
            name,
            emb.space,
            "; ".join(tried) or "nothing",
        )
    return emb
