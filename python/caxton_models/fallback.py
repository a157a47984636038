"""From a model name to a loaded :class:`~caxton_models.inference.Embedder`,
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
lists what was tried: keyword-only search (the spec's degraded mode) is the
caller's decision, not something to hide.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caxton_models.errors import CaxtonError, ModelNotFound, ModelUnavailable

if TYPE_CHECKING:
    from caxton_models.config import Config
    from caxton_models.inference import Embedder
    from caxton_models.manager import ModelManager
    from caxton_models.registry import ModelSpec

log = logging.getLogger("caxton_models.fallback")

BUNDLED_MODEL = "bundled-mini"


def spec_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """What the Embedder needs from a registry entry."""
    kw: dict[str, Any] = {"model_id": spec.model_id, "space": spec.space}
    if spec.query_prefix or spec.passage_prefix:
        kw["prefixes"] = {"query": spec.query_prefix, "passage": spec.passage_prefix}
    return kw


def resolve(
    name_or_path: str | os.PathLike[str], manager: ModelManager
) -> tuple[Path, dict[str, Any]]:
    """A folder (used as is), the bundled model, or a registry name (installed,
    validated, downloaded if needed and allowed). Returns the folder and the
    Embedder keyword arguments from the registry."""
    name = os.fspath(name_or_path)
    if name == BUNDLED_MODEL:
        from caxton_models._bundled import bundled_dir

        spec = manager.registry.get(BUNDLED_MODEL) if BUNDLED_MODEL in manager.registry else None
        return bundled_dir(), spec_kwargs(spec) if spec else {}
    if name in manager.registry:
        path, spec = manager.ensure(name)
        return path, spec_kwargs(spec)
    path = Path(name).expanduser()
    if path.is_dir():
        return path, {}
    manager.registry.get(name)  # raises ModelNotFound with the closest names
    raise ModelNotFound(f"model {name!r} not found", model=name)  # pragma: no cover


def _chain(name: str, config: Config) -> list[str]:
    if config.fallback_strategy == "manual":
        return [name]
    out = [name]
    for n in config.fallback_models:
        if n not in out:
            out.append(n)
    return out


def load_with_fallback(
    name_or_path: str | os.PathLike[str],
    *,
    manager: ModelManager,
    fallback: bool | None = None,
    **kwargs: Any,
) -> Embedder:
    """Load ``name_or_path``, or the first model of the fallback chain that
    loads. ``fallback=False`` (or a folder path) tries the one model only."""
    from caxton_models.inference import Embedder

    cfg = manager.config
    name = os.fspath(name_or_path)
    is_registry = name in manager.registry
    chain = _chain(name, cfg) if (is_registry and fallback is not False) else [name]
    wanted = manager.registry.get(name) if is_registry else None
    tried: list[str] = []
    for candidate in chain:
        if candidate != name:
            if candidate not in manager.registry:
                tried.append(f"{candidate}: not in the registry")
                continue
            spec = manager.registry.get(candidate)
            if (
                wanted is not None
                and spec.dimensions != wanted.dimensions
                and not cfg.allow_dimension_mismatch
            ):
                tried.append(
                    f"{candidate}: {spec.dimensions} dimensions, not {wanted.dimensions} "
                    "(allow_dimension_mismatch is false)"
                )
                continue
            if (
                cfg.fallback_strategy == "strict"
                and not spec.bundled
                and manager.cache.get(candidate) is None
            ):
                tried.append(f"{candidate}: not installed (fallback_strategy: strict)")
                continue
        try:
            path, kw = resolve(candidate, manager)
            try:
                emb = Embedder.from_dir(path, **{**kw, **kwargs})
            except (CaxtonError, OSError, RuntimeError, ValueError) as err:
                if candidate not in manager.registry or candidate == BUNDLED_MODEL:
                    raise
                # A cached model that will not load: validate it fully and
                # re-fetch exactly the bad files, then try once more.
                path, _ = manager.on_load_failure(candidate, err)
                emb = Embedder.from_dir(path, **{**kw, **kwargs})
        except (CaxtonError, OSError, RuntimeError, ValueError) as err:
            if len(chain) == 1:
                raise
            reason = f"{candidate}: {type(err).__name__}: {err}"
            log.warning("cannot use %s", reason)
            tried.append(reason)
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
    raise ModelUnavailable(
        f"no embedding model could be loaded for {name!r}. Tried: " + "; ".join(tried) + ". "
        "Install one offline with `caxton model install`, allow downloads, or add "
        "'bundled-mini' to fallback_models; keyword-only search is the remaining option.",
        model=name,
        tried=tried,
    )


__all__ = ["BUNDLED_MODEL", "load_with_fallback", "resolve", "spec_kwargs"]
