"""Step 1, the registry lookup: a name to its :class:`ModelSpec`, or, for a
Hub repo id the registry does not know, a spec made from the repository's
own files (the installed copy's, the Hugging Face cache's when offline, else
the Hub's listing), registered for next time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from caxton_models.acquire._adhoc import cache_name, describe, describe_remote, is_repo_id
from caxton_models.acquire._hfcache import HfCacheSource
from caxton_models.acquire._network import Network
from caxton_models.config import hf_hub_cache_dir
from caxton_models.errors import ModelNotFound
from caxton_models.registry import ModelSpec, Registry, spec_from_mapping
from caxton_models.store import ModelCache


class Specs:
    """The registry, completed on demand from ``cache`` or ``network``."""

    def __init__(self, registry: Registry, cache: ModelCache, network: Network) -> None:
        self.registry = registry
        self.cache = cache
        self.network = network

    def get(self, name: str, revision: str | None = None) -> ModelSpec:
        """The registry entry (``ModelNotFound`` with suggestions), or one
        described from the repository for an ``org/name`` repo id."""
        try:
            spec = self.registry.get(name)
        except ModelNotFound:
            if not is_repo_id(name):
                raise
            spec = self.describe(name, revision or "main")
            self.registry.add(spec)
        return replace(spec, revision=revision) if revision else spec

    def known(self, name: str) -> ModelSpec | None:
        """The registry's entry for ``name``, or None (nothing is described)."""
        return self.registry.get(name) if name in self.registry else None

    def describe(self, repo_id: str, revision: str) -> ModelSpec:
        """A spec for ``repo_id`` from the first source that has it."""
        installed = self.cache.get(cache_name(repo_id))
        meta = installed.metadata if installed else None
        offline = self.network.offline_reason()
        usable = meta is not None and (offline or meta.revision == revision)
        if installed is not None and meta is not None and meta.model_id == repo_id and usable:
            return describe(repo_id, meta.revision, installed.path, installed.manifest or {})
        hf = self.hf_cache_for(repo_id, revision) if offline else None
        return describe_remote(hf or self.network.hub, repo_id, revision)

    def hf_cache_for(self, repo_id: str, revision: str) -> HfCacheSource | None:
        """The Hugging Face cache, when it holds ``repo_id`` at ``revision``."""
        source = HfCacheSource(hf_hub_cache_dir())
        return source if source.has(repo_id, revision) else None

    def register(self, spec: ModelSpec | str, entry: Mapping[str, Any] | None = None) -> ModelSpec:
        """Add a :class:`ModelSpec`, or a name plus the mapping ``caxton.yaml``
        takes under ``models:``."""
        if isinstance(spec, str):
            spec = spec_from_mapping(spec, entry or {}, where=f"register({spec!r})")
        self.registry.add(spec)
        return spec
